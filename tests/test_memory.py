"""The process's memory helpers: objects set aside from the cyclic collector during a run."""

from __future__ import annotations

import gc

import pytest

from changedetect import pipeline
from changedetect.memory import set_aside_from_gc


@pytest.fixture(autouse=True)
def _nothing_frozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_objects_set_aside_within_and_handed_back_after() -> None:
    made_before = [object() for _ in range(3)]
    with set_aside_from_gc():
        assert gc.get_freeze_count() >= len(made_before)
    assert gc.get_freeze_count() == 0


def test_handed_back_when_the_run_fails() -> None:
    with pytest.raises(RuntimeError), set_aside_from_gc():
        raise RuntimeError("the run failed")
    assert gc.get_freeze_count() == 0


def test_a_callers_own_freeze_stays_the_callers() -> None:
    gc.freeze()
    with set_aside_from_gc():
        pass
    assert gc.get_freeze_count() > 0  # not undone behind the caller's back


class _Stop(Exception):
    pass


def test_an_analysis_runs_with_its_objects_set_aside(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def first_step(*args: object, **kwargs: object) -> None:
        seen.append(gc.get_freeze_count())
        raise _Stop

    monkeypatch.setattr(pipeline, "composite_of", first_step)
    with pytest.raises(_Stop):
        pipeline.analyse(None, None, None, None, None, None, None)  # type: ignore[arg-type]
    assert seen and seen[0] > 0
    assert gc.get_freeze_count() == 0
