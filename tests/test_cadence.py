"""The poll schedule's pure decisions: quantiles, first poll, next poll, learning, bounds."""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from worldrouter_async import ImageRequest, PollPolicy
from worldrouter_async._cadence import (
    EARLY,
    LEAD,
    PARK_LIMIT,
    PROBE_SHARE,
    PROBES,
    SPACING,
    Cadence,
    Cohort,
    Durations,
    first_delay,
    learn,
    next_delay,
    poll_failed,
    shape_of,
)

POLICY = PollPolicy(initial_delay=2.0, factor=1.5, max_interval=8.0, jitter=0.0)


class Entry:
    """A tracked task as the cadence sees it (the poller's entries have these slots)."""

    def __init__(self, created: float | None = 0.0) -> None:
        self.created = created
        self.seen = created or 0.0
        self.polls = 0
        self.probe = False
        self.active = True


def learned(durations: list[float]) -> Cohort[Entry]:
    """A cohort that has already recorded `durations`."""
    cohort: Cohort[Entry] = Cohort()
    for seconds in durations:
        cohort.durations.add(seconds)
    return cohort


def test_quantile_indexes_the_sorted_durations() -> None:
    """With 100 samples 1..100, the 0.1 quantile is 11, the median 51 and 1.0 the slowest."""
    durations = Durations(size=100)
    for seconds in range(100, 0, -1):
        durations.add(float(seconds))
    assert durations.quantile(0.1) == 11.0
    assert durations.quantile(0.5) == 51.0
    assert durations.quantile(1.0) == 100.0
    assert durations.quantile(0.0) == 1.0


def test_old_samples_are_forgotten() -> None:
    """Only the last `size` durations count, so a model that got faster is followed."""
    durations = Durations(size=4)
    for seconds in (50.0, 50.0, 50.0, 50.0, 5.0, 5.0, 5.0, 5.0):
        durations.add(seconds)
    assert len(durations) == 4
    assert durations.quantile(1.0) == 5.0


def test_cohorts_are_keyed_by_shape_not_prompt() -> None:
    """Same model, size, quality and n share a cohort; another size does not."""
    cadence: Cadence[Entry] = Cadence()
    a = ImageRequest(model="gpt-image-2", prompt="a", size="1024x1024")
    b = ImageRequest(model="gpt-image-2", prompt="b", size="1024x1024")
    c = ImageRequest(model="gpt-image-2", prompt="a", size="512x512")
    assert cadence.cohort(a) is cadence.cohort(b)
    assert cadence.cohort(a) is not cadence.cohort(c)
    assert shape_of(a) == ("gpt-image-2", "1024x1024", None, None)


def test_without_a_cohort_the_schedule_is_the_policys_growing_interval() -> None:
    """A task tracked by ID (no cohort) is polled after 2, then 3, 4.5, 6.75, 8, 8 s."""
    entry = Entry(created=None)
    delays = [first_delay(POLICY, None, entry)]
    delays += [next_delay(POLICY, None, entry, now=float(i)) for i in range(5)]
    assert delays == [2.0, 3.0, 4.5, 6.75, 8.0, 8.0]


def test_a_cold_cohort_probes_then_parks() -> None:
    """The first PROBES tasks of a new shape are polled at once; the rest are parked."""
    cohort: Cohort[Entry] = Cohort()
    entries = [Entry() for _ in range(PROBES + 3)]
    delays = [first_delay(POLICY, cohort, entry) for entry in entries]
    assert delays == [2.0] * PROBES + [PARK_LIMIT * 8.0] * 3
    assert [entry.probe for entry in entries] == [True] * PROBES + [False] * 3
    assert cohort.parked == entries[PROBES:]


def test_probes_are_polled_densely_only_while_tasks_wait_on_them() -> None:
    """A probe with tasks parked on it is polled every initial_delay (then 10% of its age)."""
    cohort: Cohort[Entry] = Cohort()
    probe = Entry()
    first_delay(POLICY, cohort, probe)
    assert next_delay(POLICY, cohort, probe, now=2.0) == 3.0  # alone: the growing interval
    cohort.parked.append(Entry())
    assert next_delay(POLICY, cohort, probe, now=5.0) == 2.0
    assert next_delay(POLICY, cohort, probe, now=40.0) == PROBE_SHARE * 40.0


def test_learned_first_poll_comes_a_spacing_after_the_mirrored_early_quantile() -> None:
    """First poll = median^2 / quantile(1 - EARLY) + SPACING * median, capped at the median."""
    durations = [float(d) for d in range(10, 110)]  # median 60, 0.97 quantile 107
    cohort = learned(durations)
    expected = 60.0 * 60.0 / 107.0 + min(SPACING * 60.0, 8.0)
    assert first_delay(POLICY, cohort, Entry()) == expected
    assert cohort.durations.quantile(1.0 - EARLY) == 107.0


def test_learned_first_poll_is_never_after_the_median_nor_before_initial_delay() -> None:
    """Tightly grouped durations put the first poll at the median; tiny ones at 2 s."""
    assert first_delay(POLICY, learned([30.0] * 20), Entry()) == 30.0
    assert first_delay(POLICY, learned([0.5] * 20), Entry()) == 2.0


def test_learned_polls_are_spaced_by_a_share_of_the_median() -> None:
    """Within the learned durations the gap is SPACING of the median (25 s: 3 s)."""
    cohort = learned([20.0, 22.0, 25.0, 25.0, 25.0, 28.0, 30.0, 40.0])
    entry = Entry()
    assert next_delay(POLICY, cohort, entry, now=21.0) == SPACING * 25.0
    assert (entry.polls, entry.seen) == (1, 21.0)


def test_past_every_learned_duration_gaps_grow_with_age_up_to_max_interval() -> None:
    """Older than the slowest learned task, the gap is SPACING of its age, at most 8 s."""
    cohort = learned([20.0] * 8)
    assert next_delay(POLICY, cohort, Entry(), now=50.0) == SPACING * 50.0
    assert next_delay(POLICY, cohort, Entry(), now=500.0) == 8.0


def test_learning_records_the_middle_of_the_last_two_polls() -> None:
    """A task seen running at 20 s and finished at 24 s is recorded as taking 22 s."""
    cohort: Cohort[Entry] = Cohort()
    entry = Entry(created=100.0)
    next_delay(POLICY, cohort, entry, now=120.0)
    learn(cohort, entry, 124.0, completed=True, schedule=lambda *_: None)
    assert cohort.durations.quantile(0.5) == 22.0


def test_a_task_the_first_poll_found_finished_is_recorded_earlier() -> None:
    """Found finished at its first poll (20 s), it is recorded at LEAD of that, not later."""
    cohort: Cohort[Entry] = Cohort()
    learn(cohort, Entry(created=0.0), 20.0, completed=True, schedule=lambda *_: None)
    assert cohort.durations.quantile(0.5) == LEAD * 20.0


def test_a_failed_task_teaches_nothing_but_still_releases_the_parked() -> None:
    """A failure is no duration; parked tasks are still released, at once."""
    cohort: Cohort[Entry] = Cohort()
    parked, cancelled = Entry(created=0.0), Entry(created=0.0)
    cancelled.active = False
    cohort.parked += [parked, cancelled]
    scheduled: list[tuple[Entry, float]] = []
    learn(cohort, Entry(), 7.0, completed=False, schedule=lambda e, t: scheduled.append((e, t)))
    assert len(cohort.durations) == 0
    assert scheduled == [(parked, 7.0)]
    assert cohort.parked == []


def test_parked_tasks_are_released_at_their_own_age_of_the_fastest() -> None:
    """A task parked later is first polled when it is as old as the fastest finished one."""
    cohort: Cohort[Entry] = Cohort()
    early, late = Entry(created=0.0), Entry(created=15.0)
    cohort.parked += [early, late]
    scheduled: list[tuple[Entry, float]] = []
    probe = Entry(created=0.0)
    next_delay(POLICY, cohort, probe, now=18.0)
    learn(cohort, probe, 20.0, completed=True, schedule=lambda e, t: scheduled.append((e, t)))
    assert scheduled == [(early, 20.0), (late, 15.0 + 19.0)]


def test_the_learned_first_poll_does_not_creep_later() -> None:
    """3,000 tasks polled by the cadence keep the first poll between the 1% and 20% quantiles.

    Tasks the first poll finds finished are recorded early (`LEAD`), so the first poll cannot
    ratchet later with each of them.
    """
    rng = random.Random(1)
    cohort: Cohort[Entry] = Cohort()
    arrivals = [rng.lognormvariate(math.log(25.0), 0.3) for _ in range(3000)]
    truth = sorted(arrivals)
    for duration in arrivals:
        entry = Entry(created=0.0)
        now = first_delay(POLICY, cohort, entry)
        while now < duration:
            now += next_delay(POLICY, cohort, entry, now)
        learn(cohort, entry, now, completed=True, schedule=lambda *_: None)
    first = first_delay(POLICY, cohort, Entry())
    assert truth[len(truth) // 100] < first < truth[len(truth) // 5]


def test_a_task_whose_poll_failed_teaches_nothing() -> None:
    """After a failed poll the task's duration is not learned and it polls on the policy."""
    cohort = learned([20.0] * 8)
    entry = Entry(created=0.0)
    poll_failed(entry)
    assert next_delay(POLICY, cohort, entry, now=30.0) == 3.0
    learn(cohort, entry, 90.0, completed=True, schedule=lambda *_: None)
    assert len(cohort.durations) == 8


def test_a_probe_whose_poll_failed_still_releases_the_parked() -> None:
    """A probe that hit an error teaches nothing when it finishes, but frees the others."""
    cohort: Cohort[Entry] = Cohort()
    probe, parked = Entry(created=0.0), Entry(created=0.0)
    cohort.parked.append(parked)
    poll_failed(probe)
    scheduled: list[tuple[Entry, float]] = []
    learn(cohort, probe, 9.0, completed=True, schedule=lambda e, t: scheduled.append((e, t)))
    assert len(cohort.durations) == 0
    assert scheduled == [(parked, 9.0)]


durations_lists = st.lists(
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False), min_size=8, max_size=300
)
policies = st.builds(
    PollPolicy,
    initial_delay=st.floats(min_value=1e-3, max_value=60.0),
    factor=st.floats(min_value=1.0, max_value=4.0),
    max_interval=st.floats(min_value=1e-3, max_value=600.0),
    jitter=st.just(0.0),
    min_samples=st.integers(min_value=1, max_value=8),
)


@given(policies, durations_lists, st.floats(min_value=0.0, max_value=1e7))
def test_learned_gaps_stay_within_the_policys_bounds(
    policy: PollPolicy, durations: list[float], age: float
) -> None:
    """Whatever was learned, the next poll is positive and at most max_interval away."""
    gap = next_delay(policy, learned(durations), Entry(), now=age)
    assert 0.0 < gap <= max(policy.max_interval, policy.initial_delay / 4)
    assert math.isfinite(gap)


@given(policies, durations_lists)
def test_learned_first_poll_is_bounded_by_the_median(
    policy: PollPolicy, durations: list[float]
) -> None:
    """The first poll comes no later than the learned median (or initial_delay if later)."""
    cohort = learned(durations)
    delay = first_delay(policy, cohort, Entry())
    assert (
        policy.interval(0)
        <= delay
        <= max(policy.interval(0), sorted(durations)[len(durations) // 2])
    )


@given(st.lists(st.floats(min_value=0.0, max_value=1e6), min_size=1, max_size=100), st.data())
def test_quantiles_are_ordered_and_within_the_samples(
    durations: list[float], data: st.DataObject
) -> None:
    """A higher fraction never gives a smaller quantile, and every quantile is a sample."""
    cohort = learned(durations)
    low = data.draw(st.floats(min_value=0.0, max_value=1.0))
    high = data.draw(st.floats(min_value=low, max_value=1.0))
    assert cohort.durations.quantile(low) <= cohort.durations.quantile(high)
    assert cohort.durations.quantile(low) in durations
