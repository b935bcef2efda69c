"""The remote backend's wire format (Arrow IPC) and how a run is shared among servers by language."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from moe_core.backends.wire import StreamEncoder, WireError, decode, encode, read_stream
from moe_core.pipeline import PlannedSequence, shard_by_language
from moe_core.records import RoutingBatch


def _batch(rng: np.random.Generator, lengths: list[int], *, id_only: bool = False, logits: bool = False):
    n, layers, k, experts = sum(lengths), 3, 2, 6
    return RoutingBatch(
        layers=np.array([1, 2, 4], np.int16),
        seq_lengths=np.array(lengths),
        token_ids=rng.integers(0, 5000, n),
        pieces=[f"tok{i}é" for i in range(n)],
        special=rng.random(n) < 0.2,
        generated=rng.random(n) < 0.3,
        expert_ids=rng.integers(0, experts, (n, layers, k)).astype(np.int16),
        expert_weights=None if id_only else rng.random((n, layers, k)).astype(np.float32),
        router_probs=None if id_only else rng.random((len(lengths), layers, experts)).astype(np.float32),
        router_logits=rng.normal(size=(n, layers, experts)).astype(np.float32) if logits else None,
    )


def _assert_same(got: RoutingBatch, sent: RoutingBatch) -> None:
    for field in ("layers", "seq_lengths", "token_ids", "special", "generated", "expert_ids"):
        np.testing.assert_array_equal(getattr(got, field), getattr(sent, field), field)
        assert getattr(got, field).dtype.kind == getattr(sent, field).dtype.kind, field
    for field in ("expert_weights", "router_probs", "router_logits"):
        theirs, ours = getattr(got, field), getattr(sent, field)
        assert (theirs is None) == (ours is None), field
        if ours is not None:
            np.testing.assert_array_equal(theirs, ours, field)
    assert got.pieces == sent.pieces


@pytest.mark.parametrize("shape", [{}, {"id_only": True}, {"logits": True}])
def test_batches_travel_unchanged_through_a_stream(shape):
    rng = np.random.default_rng(3)
    sent = [_batch(rng, [3, 1, 5], **shape), _batch(rng, [2], **shape), _batch(rng, [4, 4], **shape)]
    encoder = StreamEncoder()
    chunks = [encoder.batch(encode(batch)) for batch in sent] + [encoder.finish()]
    # Byte boundaries of a network stream fall anywhere: feed it a few bytes at a time.
    stream = b"".join(chunks)
    received = list(read_stream(stream[i : i + 7] for i in range(0, len(stream), 7)))
    assert len(received) == 3
    for (got, texts), batch in zip(received, sent, strict=True):
        assert texts is None
        _assert_same(got, batch)


def test_generated_texts_ride_with_their_routing():
    batch = _batch(np.random.default_rng(0), [2, 3])
    got, texts = decode(encode(batch, ["first", "двa"]))
    assert texts == ["first", "двa"]
    _assert_same(got, batch)


def test_a_server_error_and_a_cut_stream_are_wire_errors():
    batch = _batch(np.random.default_rng(1), [4, 2])
    encoder = StreamEncoder()
    first = encoder.batch(encode(batch))
    failed = read_stream([first, encoder.finish(error="the trace ran past this server's limit")])
    assert decode(encode(batch))[0].n_tokens == next(failed)[0].n_tokens
    with pytest.raises(WireError, match="ran past") as raised:
        next(failed)
    assert raised.value.server_message == "the trace ran past this server's limit"
    with pytest.raises(WireError, match="broke off or is damaged") as cut:
        list(read_stream([first[: len(first) // 2]]))
    assert cut.value.server_message is None


def _plan(langs_tokens: dict[str, list[int]]) -> list[PlannedSequence]:
    rows = [(lang, n) for lang, counts in langs_tokens.items() for n in counts]
    return [
        PlannedSequence(seq_id=i, item_id=str(i), lang=lang, text="x", n_tokens=n)
        for i, (lang, n) in enumerate(sorted(rows, key=lambda row: row[1]))
    ]


def test_shards_hold_whole_languages_balanced_by_tokens_in_plan_order():
    plan = _plan({"eng_Latn": [10, 10, 10], "deu_Latn": [12, 12], "jpn_Jpan": [5, 5, 5, 5], "rus_Cyrl": [1]})
    shards = shard_by_language(plan, 2)
    # Most tokens first, each to the lighter shard: eng 30 -> 0; deu 24 -> 1; jpn 20 -> 1 (24 < 30); rus 1 -> 0.
    langs = [{seq.lang for seq in shard} for shard in shards]
    assert langs == [{"eng_Latn", "rus_Cyrl"}, {"deu_Latn", "jpn_Jpan"}]
    assert sorted(seq.seq_id for shard in shards for seq in shard) == [seq.seq_id for seq in plan]
    for shard in shards:
        assert [seq.seq_id for seq in shard] == sorted(seq.seq_id for seq in shard)
    # More servers than languages: the extra ones get nothing.
    assert [len(shard) for shard in shard_by_language(plan[:2], 3)].count(0) >= 1
    assert shard_by_language([replace(seq, lang="eng_Latn") for seq in plan], 1) == [
        [replace(seq, lang="eng_Latn") for seq in plan]
    ]
