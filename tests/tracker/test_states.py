"""The lifecycle: every allowed and forbidden transition, events, deadlines and escalation."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import select

from changedetect.errors import ChangeDetectError
from changedetect.tracker import (
    CASE_STATES,
    TRANSITIONS,
    CaseNotFoundError,
    CaseQuery,
    InvalidTransitionError,
    TrackerError,
    TrackerSettings,
    escalate_overdue,
    get_case,
    ingest,
    list_cases,
    monthly_report,
    transition,
)
from changedetect.tracker.models import Case, CaseEvent
from changedetect.tracker.states import check_transition
from tests.factories import NOW, collection, feature, rect

ALLOWED = {
    ("issued", "verifying"),
    ("verifying", "compliant"),
    ("verifying", "false_alarm"),
    ("verifying", "violation"),
    ("violation", "rectifying"),
    ("rectifying", "closed"),
}
#: How to walk a fresh case into each state.
PATH = {
    "issued": [],
    "verifying": ["verifying"],
    "compliant": ["verifying", "compliant"],
    "false_alarm": ["verifying", "false_alarm"],
    "violation": ["verifying", "violation"],
    "rectifying": ["verifying", "violation", "rectifying"],
    "closed": ["verifying", "violation", "rectifying", "closed"],
}


def test_transition_table_is_exactly_the_lifecycle():
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == ALLOWED


@pytest.mark.parametrize(("current", "target"), list(itertools.product(CASE_STATES, repeat=2)))
def test_check_transition_allows_only_the_lifecycle(current, target):
    if (current, target) in ALLOWED:
        check_transition(1, current, target)
    else:
        with pytest.raises(InvalidTransitionError, match=f"case 1 is {current}"):
            check_transition(1, current, target)


def test_unknown_state_names_the_valid_ones():
    with pytest.raises(InvalidTransitionError, match="unknown case state 'done'.*issued"):
        check_transition(1, "issued", "done")


def _new_case(db, n: int = 1, **props) -> list[int]:
    features = [feature(f"c{i}", rect(i * 400.0, 0, 60), **props) for i in range(n)]
    report = ingest(db, collection(features), now=NOW)
    return [o.case_id for o in report.outcomes]


def _walk(db, case_id: int, state: str, at: dt.datetime = NOW) -> None:
    for step in PATH[state]:
        transition(db, case_id, step, actor="tester", now=at)


def test_every_transition_through_the_service(db):
    """From every state, each allowed move succeeds and each forbidden one fails unchanged."""
    case_ids = iter(_new_case(db, len(CASE_STATES) * len(CASE_STATES)))
    for current, target in itertools.product(CASE_STATES, repeat=2):
        case_id = next(case_ids)
        _walk(db, case_id, current)
        with db.session() as s:
            events_before = len(
                s.scalars(select(CaseEvent).where(CaseEvent.case_id == case_id)).all()
            )
        if (current, target) in ALLOWED:
            summary = transition(db, case_id, target, actor="ana", comment="seen", now=NOW)
            assert summary.state == target
        else:
            with pytest.raises(InvalidTransitionError) as info:
                transition(db, case_id, target, actor="ana", now=NOW)
            assert isinstance(info.value, ChangeDetectError)
            assert f"case {case_id} is {current} and cannot move to {target}" in str(info.value)
        with db.session() as s:
            case = s.get(Case, case_id)
            events = s.scalars(
                select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)
            ).all()
        if (current, target) in ALLOWED:
            assert case.state == target
            assert len(events) == events_before + 1
            last = events[-1]
            assert (last.kind, last.from_state, last.to_state) == ("transition", current, target)
            assert (last.actor, last.comment, last.at) == ("ana", "seen", NOW)
        else:
            assert case.state == current
            assert len(events) == events_before


def test_transition_records_verification_and_closing_times(db):
    (case_id,) = _new_case(db)
    t1, t2, t3 = (NOW + dt.timedelta(days=d) for d in (2, 5, 40))
    transition(db, case_id, "verifying", actor="a", now=t1)
    s = transition(db, case_id, "violation", actor="b", now=t2)
    assert (s.verified_at, s.closed_at) == (t2, None)
    transition(db, case_id, "rectifying", actor="b", now=t2)
    s = transition(db, case_id, "closed", actor="c", now=t3)
    assert (s.verified_at, s.closed_at) == (t2, t3)
    with db.session() as session:
        detail = get_case(session, case_id, now=t3)
    moves = [(e.from_state, e.to_state, e.actor) for e in detail.events if e.kind == "transition"]
    assert moves == [
        ("issued", "verifying", "a"),
        ("verifying", "violation", "b"),
        ("violation", "rectifying", "b"),
        ("rectifying", "closed", "c"),
    ]


def test_transition_errors_are_clear(db):
    (case_id,) = _new_case(db)
    with pytest.raises(CaseNotFoundError, match="no case 999"):
        transition(db, 999, "verifying", actor="a")
    with pytest.raises(TrackerError, match="needs an actor"):
        transition(db, case_id, "verifying", actor="  ")
    _walk(db, case_id, "false_alarm")
    with pytest.raises(InvalidTransitionError, match="false_alarm is a final state"):
        transition(db, case_id, "verifying", actor="a")


def test_deadline_is_configurable_days_from_issue(db):
    report = ingest(
        db,
        collection([feature("d1", rect(0, 0, 60))]),
        now=NOW,
        settings=TrackerSettings(deadline_days=10),
    )
    report2 = ingest(db, collection([feature("d2", rect(900, 0, 60))]), now=NOW)
    with db.session() as s:
        assert s.get(Case, report.outcomes[0].case_id).deadline == NOW + dt.timedelta(days=10)
        assert s.get(Case, report2.outcomes[0].case_id).deadline == NOW + dt.timedelta(days=30)


def test_overdue_cases_are_escalated_and_listed_first(db):
    ids = _new_case(db, 5, priority="normal")
    urgent = (
        ingest(
            db,
            collection([feature("u", rect(5000, 0, 60), priority="urgent")]),
            now=NOW + dt.timedelta(days=20),
        )
        .outcomes[0]
        .case_id
    )
    _walk(db, ids[0], "verifying")  # still awaiting: can be overdue
    _walk(db, ids[1], "violation")  # verified in time: never overdue
    _walk(db, ids[2], "false_alarm")
    later = NOW + dt.timedelta(days=31)
    # before the nightly escalation runs, overdue cases already sort first
    with db.session() as s:
        page = list_cases(s, now=later)
    assert [c.id for c in page.items][:3] == [ids[0], ids[3], ids[4]]
    assert all(c.overdue for c in page.items[:3]) and not page.items[3].overdue
    escalated = escalate_overdue(db, now=later)
    assert escalated == [ids[0], ids[3], ids[4]]
    assert escalate_overdue(db, now=later) == []  # a rerun flags nothing new
    with db.session() as s:
        page = list_cases(s, now=later)
        flagged = list_cases(s, CaseQuery(escalated=True), now=later)
        detail = get_case(s, ids[3], now=later)
    order = [c.id for c in page.items]
    assert order[:3] == [ids[0], ids[3], ids[4]]
    assert order[3] == urgent  # then by priority: the urgent (not overdue) case leads the rest
    assert {c.id for c in flagged.items} == set(escalated)
    assert [e.kind for e in detail.events][-1] == "escalated"
    # a verdict clears the escalation (nothing left to chase) and says so
    transition(db, ids[0], "compliant", actor="a", now=later)
    with db.session() as s:
        assert s.get(Case, ids[0]).escalated is False
        report = monthly_report(s, "2025-06", now=later + dt.timedelta(days=3))
    (row,) = report.rows  # every case here was first detected in June
    # ids[3], ids[4] still waiting past their deadline; ids[0] verified late, ids[1-2] in time
    assert (row.overdue, row.verified, row.verified_on_time) == (2, 3, 2)
