"""The trace pipeline's hand-off from the backends to the writer: every batch reaches the sink once,
in plan order, in groups of the byte budget; the backends stop tracing while a group's worth of
batches waits for a busy writer; and a slow store makes the next group wait longer for batches."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence

from moe_core.pipeline import PlannedSequence, TracedBatch, plan_trace, run_trace
from moe_core.records import RoutingBatch
from moe_core.steering.plan import SteeringPlan
from moe_core.synthetic import PlantedRouting, SyntheticBackend, synthetic_corpus
from tests.conftest import planted_routing


class CountingBackend(SyntheticBackend):
    """The synthetic backend, counting the batches it traced."""

    def __init__(self, plan: PlantedRouting) -> None:
        super().__init__(plan)
        self.traced = 0

    def trace(
        self, texts: Sequence[str], *, save_logits: bool = False, plan: SteeringPlan | None = None
    ) -> RoutingBatch:
        batch = super().trace(texts, save_logits=save_logits, plan=plan)
        self.traced += 1
        return batch


def _planned(n_items: int) -> tuple[CountingBackend, list[PlannedSequence]]:
    routing = planted_routing(n_items=n_items)
    backend = CountingBackend(routing)
    return backend, plan_trace(backend, synthetic_corpus(routing)).sequences


def _batch_bytes(backend: SyntheticBackend, sequences: list[PlannedSequence], batch_size: int) -> int:
    return backend.trace([seq.text for seq in sequences[:batch_size]]).nbytes


def test_every_batch_reaches_the_sink_once_in_plan_order_grouped_by_the_byte_budget():
    backend, sequences = _planned(n_items=10)  # 90 sequences: 12 batches of 8
    budget = int(2.5 * _batch_bytes(backend, sequences, 8))
    groups: list[list[TracedBatch]] = []
    run_trace([backend], sequences, groups.append, batch_size=8, group_bytes=budget, max_delay_s=60)
    stored = [seq.seq_id for group in groups for chunk, _ in group for seq in chunk]
    assert stored == [seq.seq_id for seq in sequences]
    sizes = [[batch.nbytes for _, batch in group] for group in groups]
    assert len(groups) > 3
    for group in sizes[:-1]:  # each is flushed by the budget (the delay never runs out), no later
        assert sum(group) >= budget > sum(group[:-1])
    assert sum(sizes[-1]) <= budget + max(sizes[-1])  # the end flushes the rest


def test_the_backends_wait_while_a_groups_worth_of_batches_waits_for_a_busy_writer():
    backend, sequences = _planned(n_items=20)  # 180 sequences: 45 batches of 4
    one_batch = _batch_bytes(backend, sequences, 4)
    backend.traced = 0
    writer_busy, first_group = threading.Event(), threading.Event()
    groups: list[int] = []

    def slow_sink(group: Sequence[TracedBatch]) -> None:
        groups.append(len(group))
        first_group.set()
        assert writer_busy.wait(60)  # the writer is stuck storing its first group

    trace = threading.Thread(
        target=run_trace,
        args=([backend], sequences, slow_sink),
        kwargs={"batch_size": 4, "group_bytes": 3 * one_batch, "max_delay_s": 60},
    )
    trace.start()
    assert first_group.wait(60)
    # The first group (3 batches) is being stored. The backend may trace what fits in the hand-off
    # (up to 3 more, the sizes vary a little), one more that waits to get in, and not the 39 left.
    time.sleep(1.0)  # time enough to trace all 45 batches were nothing holding it back
    assert 4 <= backend.traced <= 3 + 4 + 1
    writer_busy.set()
    trace.join(60)
    assert not trace.is_alive() and backend.traced == 45 and groups[0] == 3 and sum(groups) == 45


class PacedBackend(CountingBackend):
    """The counting synthetic backend, taking at least 20 ms a batch."""

    def trace(
        self, texts: Sequence[str], *, save_logits: bool = False, plan: SteeringPlan | None = None
    ) -> RoutingBatch:
        time.sleep(0.02)
        return super().trace(texts, save_logits=save_logits, plan=plan)


def test_after_a_slow_store_the_next_group_waits_twice_as_long_for_batches():
    routing = planted_routing(n_items=40)  # 360 sequences: 120 batches of 3, 2.4 s at least
    backend = PacedBackend(routing)
    sequences = plan_trace(backend, synthetic_corpus(routing)).sequences
    calls: list[tuple[float, float]] = []  # (called, returned) per group

    def sink(group: Sequence[TracedBatch]) -> None:
        called = time.monotonic()
        if not calls:
            time.sleep(0.4)  # the first store is slow
        calls.append((called, time.monotonic()))

    run_trace([backend], sequences, sink, batch_size=3, max_delay_s=0.05)
    assert backend.traced == 120 and len(calls) >= 3
    # The second group starts as the first store returns and waits 2 x 0.4 s, not 0.05 s; the
    # stores after it are fast, so the groups after it close after 0.05 s again.
    assert calls[1][0] - calls[0][1] >= 0.75
    assert min(later - earlier for (_, earlier), (later, _) in itertools.pairwise(calls[1:])) < 0.5
