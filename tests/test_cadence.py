"""Duration learning: quantiles over a bounded window, cohorts keyed by task shape."""

from __future__ import annotations

from worldrouter_async import ImageRequest
from worldrouter_async._cadence import Cadence, Durations, shape_of


def test_fastest_tenth_needs_enough_samples() -> None:
    """Below min_samples nothing is learned; below ten samples it is the fastest."""
    durations = Durations()
    assert durations.fastest_tenth(1) is None
    for seconds in (30.0, 20.0, 25.0):
        durations.add(seconds)
    assert durations.fastest_tenth(8) is None
    assert durations.fastest_tenth(1) == 20.0


def test_fastest_tenth_is_the_tenth_percentile() -> None:
    """With 100 samples 1..100 the fastest tenth is 11 (index 10)."""
    durations = Durations(size=100)
    for seconds in range(100, 0, -1):
        durations.add(float(seconds))
    assert durations.fastest_tenth(8) == 11.0


def test_old_samples_are_forgotten() -> None:
    """Only the last `size` durations count, so a model that got faster is followed."""
    durations = Durations(size=4)
    for seconds in (50.0, 50.0, 50.0, 50.0, 5.0, 5.0, 5.0, 5.0):
        durations.add(seconds)
    assert len(durations) == 4
    assert durations.fastest_tenth(1) == 5.0


def test_cohorts_are_keyed_by_shape_not_prompt() -> None:
    """Same model, size, quality and n share a cohort; another size does not."""
    cadence: Cadence[object] = Cadence()
    a = ImageRequest(model="gpt-image-2", prompt="a", size="1024x1024")
    b = ImageRequest(model="gpt-image-2", prompt="b", size="1024x1024")
    c = ImageRequest(model="gpt-image-2", prompt="a", size="512x512")
    assert cadence.cohort(a) is cadence.cohort(b)
    assert cadence.cohort(a) is not cadence.cohort(c)
    assert shape_of(a) == ("gpt-image-2", "1024x1024", None, None)
