"""The trace pipeline's hand-off from the backends to the writer: every batch reaches the sink once,
in plan order, in groups of the byte budget, and the backends stop tracing while a group's worth
of batches waits for a busy writer."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from moe_core.pipeline import PlannedSequence, TracedBatch, plan_trace, run_trace
from moe_core.records import RoutingBatch
from moe_core.steering.plan import SteeringPlan
from moe_core.synthetic import SyntheticBackend, synthetic_corpus
from tests.conftest import planted_routing


class CountingBackend(SyntheticBackend):
    """The synthetic backend, counting the batches it traced."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
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
    deadline = threading.Event()
    deadline.wait(1.0)  # time enough to trace all 45 batches were nothing holding it back
    assert 4 <= backend.traced <= 3 + 4 + 1
    writer_busy.set()
    trace.join(60)
    assert not trace.is_alive() and backend.traced == 45 and groups[0] == 3 and sum(groups) == 45
