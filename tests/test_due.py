"""DueQueue: earliest-due-first order under reschedule and cancel, with stale entries pruned."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from worldrouter_async._due import PRUNE_MINIMUM, DueQueue


def test_items_come_out_earliest_first_and_only_when_due() -> None:
    """pop_due hands out items due by `now`, earliest first; later ones stay."""
    queue = DueQueue[str]()
    queue.schedule("late", 5.0)
    queue.schedule("early", 1.0)
    queue.schedule("middle", 2.0)
    assert queue.next_due() == 1.0
    assert [queue.pop_due(2.0), queue.pop_due(2.0), queue.pop_due(2.0)] == [
        "early",
        "middle",
        None,
    ]
    assert len(queue) == 1
    assert "late" in queue


def test_rescheduling_replaces_the_earlier_time() -> None:
    """An item rescheduled later is not handed out at its old time, and only once."""
    queue = DueQueue[str]()
    queue.schedule("a", 1.0)
    queue.schedule("a", 3.0)
    assert queue.pop_due(2.0) is None
    assert queue.next_due() == 3.0
    assert queue.pop_due(3.0) == "a"
    assert queue.pop_due(math.inf) is None


def test_schedule_says_whether_the_item_is_now_first() -> None:
    """The poller wakes up only when a new item is due before everything else."""
    queue = DueQueue[str]()
    assert queue.schedule("a", 2.0)
    assert not queue.schedule("b", 3.0)
    assert queue.schedule("c", 1.0)


def test_cancel_and_clear_forget_items() -> None:
    """Cancelled items never come out; cancelling twice or an unknown item is harmless."""
    queue = DueQueue[str]()
    queue.schedule("a", 1.0)
    queue.schedule("b", 2.0)
    queue.cancel("a")
    queue.cancel("a")
    queue.cancel("never scheduled")
    assert queue.next_due() == 2.0
    queue.clear()
    assert queue.next_due() == math.inf
    assert len(queue) == 0


def test_stale_entries_are_pruned() -> None:
    """A thousand reschedules of one item leave a bounded heap, as trio's Deadlines do."""
    queue = DueQueue[int]()
    for step in range(1000):
        queue.schedule(0, float(step))
    assert len(queue._heap) <= 2 * len(queue) + PRUNE_MINIMUM + 1
    for item in range(1, 500):
        queue.schedule(item, 1.0)
        queue.cancel(item)
    assert len(queue._heap) <= 2 * len(queue) + PRUNE_MINIMUM + 1
    assert queue.pop_due(math.inf) == 0


operations = st.lists(
    st.one_of(
        st.tuples(st.just("schedule"), st.integers(0, 9), st.integers(0, 20)),
        st.tuples(st.just("cancel"), st.integers(0, 9), st.just(0)),
        st.tuples(st.just("pop"), st.just(0), st.integers(0, 20)),
    ),
    max_size=300,
)


@given(operations)
def test_order_matches_a_simple_model_under_any_schedule_cancel_and_pop(
    ops: list[tuple[str, int, int]],
) -> None:
    """Against a dict model: pop_due gives the item with the smallest (due, last scheduled)."""
    queue = DueQueue[int]()
    model: dict[int, tuple[float, int]] = {}
    for step, (op, item, when) in enumerate(ops):
        if op == "schedule":
            queue.schedule(item, float(when))
            model[item] = (float(when), step)
        elif op == "cancel":
            queue.cancel(item)
            model.pop(item, None)
        else:
            due = [(key, item) for item, key in model.items() if key[0] <= when]
            expected = min(due)[1] if due else None
            assert queue.pop_due(float(when)) == expected
            if expected is not None:
                del model[expected]
        assert len(queue) == len(model)
        assert queue.next_due() == min((key[0] for key in model.values()), default=math.inf)
        assert len(queue._heap) <= 2 * len(model) + PRUNE_MINIMUM + 1
