"""The trace pipeline: plan sequences by length, run them through a backend in batches, and hand
each batch to a sink while the model computes the next one.

Planning is deterministic: sequences are ordered by token count (so a batch wastes few pad
tokens) and numbered in that order, so the same corpus and model always give the same `seq_id`s
and a resumed run can skip exactly the sequences already stored.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from moe_core.backends.base import Backend
from moe_core.records import RoutingBatch


@dataclass(frozen=True, kw_only=True)
class PlannedSequence:
    seq_id: int
    item_id: str
    lang: str
    text: str
    n_tokens: int  # after truncation


@dataclass(frozen=True, kw_only=True)
class TracePlan:
    sequences: list[PlannedSequence]
    n_truncated: int  # texts longer than the backend's max_tokens

    @property
    def n_tokens(self) -> int:
        return sum(seq.n_tokens for seq in self.sequences)


Sink = Callable[[Sequence[PlannedSequence], RoutingBatch], None]
Progress = Callable[[int, int], None]  # (sequences, tokens) just stored


def plan_trace(backend: Backend, rows: Sequence[tuple[str, str, str]]) -> TracePlan:
    """Number (item_id, lang, text) rows by token count, shortest first (ties keep corpus order)."""
    counts = backend.count_tokens([text for _, _, text in rows])
    limit = backend.max_tokens
    order = sorted(range(len(rows)), key=lambda i: (min(counts[i], limit), i))
    sequences = [
        PlannedSequence(
            seq_id=seq_id, item_id=rows[i][0], lang=rows[i][1], text=rows[i][2], n_tokens=min(counts[i], limit)
        )
        for seq_id, i in enumerate(order)
    ]
    return TracePlan(sequences=sequences, n_truncated=sum(count > limit for count in counts))


def batches(sequences: Sequence[PlannedSequence], batch_size: int) -> Iterator[Sequence[PlannedSequence]]:
    for start in range(0, len(sequences), batch_size):
        yield sequences[start : start + batch_size]


def run_trace(
    backend: Backend,
    sequences: Sequence[PlannedSequence],
    sink: Sink,
    *,
    batch_size: int,
    save_logits: bool = False,
    on_progress: Progress | None = None,
) -> None:
    """Trace `sequences` batch by batch; `sink` stores each batch on a writer thread.

    At most two batches wait for the sink, which bounds memory. An error on either side stops
    both and is raised here; batches the sink already took stay stored.
    """
    pending: queue.Queue[tuple[Sequence[PlannedSequence], RoutingBatch] | None] = queue.Queue(maxsize=2)
    failure: list[BaseException] = []

    def write() -> None:
        while (job := pending.get()) is not None:
            if failure:
                continue  # drain, so the producer never blocks on a dead writer
            chunk, batch = job
            try:
                sink(chunk, batch)
            except BaseException as error:
                failure.append(error)
                continue
            if on_progress:
                on_progress(len(chunk), batch.n_tokens)

    writer = threading.Thread(target=write, name="polyroute-writer", daemon=True)
    writer.start()
    try:
        for chunk in batches(sequences, batch_size):
            if failure:
                break
            batch = backend.trace([seq.text for seq in chunk], save_logits=save_logits)
            pending.put((chunk, batch))
    finally:
        pending.put(None)
        writer.join()
    if failure:
        raise failure[0]
