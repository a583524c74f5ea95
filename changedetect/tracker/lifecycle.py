"""Write side of the lifecycle: transitions, reassignment and escalation of overdue cases.

Each function takes a :class:`~changedetect.tracker.db.TrackerDB` (its own retried write
transaction) or a :class:`~sqlalchemy.orm.Session` (inside the caller's transaction).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from .clock import utc_now
from .db import TrackerDB
from .errors import TrackerError
from .models import Case, CaseEvent
from .queries import CaseSummary, load_case, summarize
from .states import (
    AWAITING_VERIFICATION,
    FINAL_STATES,
    VERDICT_STATES,
    check_state,
    check_transition,
)

T = TypeVar("T")


def run(target: TrackerDB | Session, work: Callable[[Session], T]) -> T:
    """``work`` in ``target``'s own retried write transaction, or in the session given."""
    if isinstance(target, TrackerDB):
        return target.run_write(work)
    return work(target)


def check_actor(actor: str) -> str:
    """The actor's name, stripped; :class:`TrackerError` when there is none."""
    actor = (actor or "").strip()
    if not actor:
        raise TrackerError("every change needs an actor: name who makes it (--actor NAME)")
    return actor


def record_transition(
    session: Session,
    case: Case,
    to_state: str,
    *,
    actor: str,
    comment: str | None,
    now: dt.datetime,
) -> CaseEvent:
    """Move ``case`` (loaded for update in ``session``) to ``to_state`` if its lifecycle allows
    it, and return the recorded event (flushed: it has its id). What :func:`transition` and
    the field verification share."""
    check_transition(case.id, case.state, to_state)
    note = comment
    if case.escalated and to_state not in AWAITING_VERIFICATION:
        case.escalated = False  # the verdict is in: nothing left to chase
        note = f"{comment}; escalation cleared" if comment else "escalation cleared"
    event = CaseEvent(
        case_id=case.id,
        at=now,
        actor=actor,
        kind="transition",
        from_state=case.state,
        to_state=to_state,
        comment=note,
    )
    session.add(event)
    case.state = to_state
    case.updated_at = now
    if to_state in VERDICT_STATES and case.verified_at is None:
        case.verified_at = now
    if to_state in FINAL_STATES:
        case.closed_at = now
    session.flush()
    return event


def transition(
    target: TrackerDB | Session,
    case_id: int,
    to_state: str,
    *,
    actor: str,
    comment: str | None = None,
    now: dt.datetime | None = None,
) -> CaseSummary:
    """Move a case to ``to_state`` if its lifecycle allows it, recording who, when and why.

    Raises :class:`~changedetect.tracker.errors.InvalidTransitionError` for a move the
    lifecycle forbids and :class:`~changedetect.tracker.errors.CaseNotFoundError` for an
    unknown id. The case row is locked for the transaction, so two people moving the same
    case at once are serialised and the second sees the first's result.
    """
    check_state(to_state)
    actor = check_actor(actor)
    now = utc_now(now)

    def work(session: Session) -> CaseSummary:
        case = load_case(session, case_id, for_update=True)
        record_transition(session, case, to_state, actor=actor, comment=comment, now=now)
        return summarize(case, now=now)

    return run(target, work)


def reassign(
    target: TrackerDB | Session,
    case_id: int,
    county: str,
    *,
    actor: str,
    comment: str | None = None,
    now: dt.datetime | None = None,
) -> CaseSummary:
    """Hand a case to another county for verification (recorded as an ``assigned`` event)."""
    actor = check_actor(actor)
    county = county.strip()
    if not county:
        raise TrackerError("reassign needs a county name")
    now = utc_now(now)

    def work(session: Session) -> CaseSummary:
        case = load_case(session, case_id, for_update=True)
        if case.state in FINAL_STATES:
            raise TrackerError(f"case {case_id} is {case.state}: a final case is not reassigned")
        previous = case.assigned_county
        case.assigned_county = county
        case.updated_at = now
        text = f"assigned {previous or 'nobody'} → {county}"
        session.add(
            CaseEvent(
                case_id=case.id,
                at=now,
                actor=actor,
                kind="assigned",
                comment=f"{text}: {comment}" if comment else text,
            )
        )
        session.flush()
        return summarize(case, now=now)

    return run(target, work)


def escalate_overdue(
    target: TrackerDB | Session, *, now: dt.datetime | None = None, actor: str = "system"
) -> list[int]:
    """Flag ``escalated`` every case past its deadline and still awaiting verification.

    Returns the ids newly flagged (already flagged cases are left alone, so reruns are no-ops).
    """
    now = utc_now(now)

    def work(session: Session) -> list[int]:
        overdue = session.scalars(
            select(Case)
            .where(
                Case.state.in_(AWAITING_VERIFICATION),
                Case.deadline < now,
                Case.escalated.is_(False),
            )
            .order_by(Case.id)
            .with_for_update()
        ).all()
        for case in overdue:
            case.escalated = True
            case.updated_at = now
            session.add(
                CaseEvent(
                    case_id=case.id,
                    at=now,
                    actor=actor,
                    kind="escalated",
                    comment=f"verification deadline {case.deadline:%Y-%m-%d} passed "
                    f"while {case.state}",
                )
            )
        session.flush()
        return [c.id for c in overdue]

    return run(target, work)
