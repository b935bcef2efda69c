"""The trace pipeline: plan sequences by length, run them through a backend in batches, and hand
each batch to a sink while the model computes the next one.

Planning is deterministic: sequences are ordered by token count (so a batch wastes few pad
tokens) and numbered in that order, so the same corpus and model always give the same `seq_id`s
and a resumed run can skip exactly the sequences already stored.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from moe_core.backends.base import Backend
from moe_core.records import RoutingBatch
from moe_core.steering.plan import SteeringPlan


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


TracedBatch = tuple[Sequence[PlannedSequence], RoutingBatch]
Sink = Callable[[Sequence[TracedBatch]], None]  # stores the batches together, all or nothing
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


def shard_by_language(sequences: Sequence[PlannedSequence], n_shards: int) -> list[list[PlannedSequence]]:
    """Split a plan over `n_shards` backends, whole languages each, balancing tokens: languages go,
    most tokens first, to the shard with the fewest tokens so far. Each shard keeps plan order."""
    tokens: dict[str, int] = {}
    for seq in sequences:
        tokens[seq.lang] = tokens.get(seq.lang, 0) + seq.n_tokens
    load = [0] * n_shards
    shard_of: dict[str, int] = {}
    for lang in sorted(tokens, key=lambda lang: (-tokens[lang], lang)):
        shard = min(range(n_shards), key=lambda i: (load[i], i))
        shard_of[lang] = shard
        load[shard] += tokens[lang]
    shards: list[list[PlannedSequence]] = [[] for _ in range(n_shards)]
    for seq in sequences:
        shards[shard_of[seq.lang]].append(seq)
    return shards


class _Handoff:
    """The batches traced and not yet taken by the writer, at most about `limit` bytes of arrays: a
    producer waits while they hold that much (one batch always gets in). `None` ends the stream."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._jobs: deque[TracedBatch | None] = deque()
        self._held = 0
        self._changed = threading.Condition()

    def put(self, job: TracedBatch | None) -> None:
        size = 0 if job is None else job[1].nbytes
        with self._changed:
            while job is not None and self._held and self._held + size > self._limit:
                self._changed.wait()
            self._jobs.append(job)
            self._held += size
            self._changed.notify_all()

    def get(self, timeout: float | None = None) -> TracedBatch | None:
        """The oldest job; raises queue.Empty when none came within `timeout` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._jobs, timeout):
                raise queue.Empty
            job = self._jobs.popleft()
            self._held -= 0 if job is None else job[1].nbytes
            self._changed.notify_all()
            return job


def run_trace(
    backends: Sequence[Backend],
    sequences: Sequence[PlannedSequence],
    sink: Sink,
    *,
    batch_size: int,
    save_logits: bool = False,
    plan: SteeringPlan | None = None,
    on_progress: Progress | None = None,
    group_bytes: int = 128 << 20,
    max_delay_s: float = 0.5,
) -> None:
    """Trace `sequences` batch by batch (with the routers steered by `plan`, when given) while a
    writer thread hands finished batches to `sink`.

    Several backends (servers running the same model) share the work by language, each in its own
    thread; the one writer keeps the store single-writer. The writer groups batches until their
    arrays hold `group_bytes` (about 16M routing decisions with weights and router probabilities,
    2M with logits) or the oldest has waited `max_delay_s` or twice as long as the last group took
    to store, whichever is longer. Each store commit has a fixed cost (the language summaries it
    updates, about 0.1 s for 20 languages of a 48-layer, 128-expert model), so when storing is
    slow, large groups keep the writer ahead of the model (bench/scale.py); a small run's progress
    and a cancel still come every `max_delay_s`. While the writer stores a group the backends
    trace up to a group's worth of the next one, so model and writer overlap. A crash loses at
    most the group being stored and the batches waiting, never part of a batch. Memory stays
    bounded: two groups' worth of batches, plus one batch. An error anywhere (a backend, the sink,
    or `on_progress`, which may raise to stop the trace early) stops everything and is raised here;
    batches that arrived before a backend failed are still stored.
    """
    pending = _Handoff(group_bytes)
    failure: list[BaseException] = []  # the first error of a backend or of the sink: stops everything
    sink_broken = threading.Event()
    last_store_s = 0.0  # how long the last group took to store

    def flush(group: list[TracedBatch]) -> None:
        nonlocal last_store_s
        # Batches that arrived whole are stored even after a backend failed: less to redo on resume.
        if sink_broken.is_set() or not group:
            return
        try:
            started = time.monotonic()
            sink(group)
            last_store_s = time.monotonic() - started
            if on_progress:
                on_progress(sum(len(chunk) for chunk, _ in group), sum(batch.n_tokens for _, batch in group))
        except BaseException as error:
            failure.append(error)
            sink_broken.set()

    def write() -> None:
        group: list[TracedBatch] = []
        deadline = 0.0
        while True:
            try:
                job = pending.get(timeout=max(0.0, deadline - time.monotonic()) if group else None)
            except queue.Empty:  # the oldest batch of the group waited long enough
                flush(group)
                group = []
                continue
            if job is None:
                flush(group)
                return
            if not group:  # a slow store means the writer is what holds the trace back: fill the group
                deadline = time.monotonic() + max(max_delay_s, 2 * last_store_s)
            group.append(job)
            if sum(batch.nbytes for _, batch in group) >= group_bytes:
                flush(group)
                group = []

    def produce(backend: Backend, shard: Sequence[PlannedSequence]) -> None:
        chunks = list(batches(shard, batch_size))
        results = backend.trace_batches(
            ([seq.text for seq in chunk] for chunk in chunks), save_logits=save_logits, plan=plan
        )
        try:
            for chunk, batch in zip(chunks, results, strict=False):
                if failure:
                    return
                pending.put((chunk, batch))
        except BaseException as error:
            failure.append(error)
        finally:
            results.close()

    writer = threading.Thread(target=write, name="polyroute-writer", daemon=True)
    writer.start()
    try:
        if len(backends) == 1:
            produce(backends[0], sequences)
        else:
            shards = shard_by_language(sequences, len(backends))
            producers = [
                threading.Thread(target=produce, args=(backend, shard), name=f"polyroute-shard-{i}", daemon=True)
                for i, (backend, shard) in enumerate(zip(backends, shards, strict=True))
            ]
            for thread in producers:
                thread.start()
            for thread in producers:
                thread.join()
    finally:
        pending.put(None)
        writer.join()
    if failure:
        raise failure[0]
