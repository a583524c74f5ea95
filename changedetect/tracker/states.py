"""The case lifecycle: states, the allowed transitions between them, tags and priorities.

Pure data and checks, no database: the store and the API both lean on these tables.
"""

from __future__ import annotations

from typing import Literal

from .errors import InvalidTransitionError

CaseState = Literal[
    "issued", "verifying", "compliant", "false_alarm", "violation", "rectifying", "closed"
]
CASE_STATES: tuple[str, ...] = (
    "issued",
    "verifying",
    "compliant",
    "false_alarm",
    "violation",
    "rectifying",
    "closed",
)

#: ``issued → verifying → {compliant | false_alarm | violation}``, ``violation → rectifying → closed``.
TRANSITIONS: dict[str, frozenset[str]] = {
    "issued": frozenset({"verifying"}),
    "verifying": frozenset({"compliant", "false_alarm", "violation"}),
    "violation": frozenset({"rectifying"}),
    "rectifying": frozenset({"closed"}),
    "compliant": frozenset(),
    "false_alarm": frozenset(),
    "closed": frozenset(),
}

#: States a case never leaves.
FINAL_STATES: frozenset[str] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
#: States in which a new clue over the case updates it instead of opening another case.
OPEN_STATES: frozenset[str] = frozenset(CASE_STATES) - FINAL_STATES
#: States still waiting for the field verdict: only these can be overdue (the deadline is a
#: verification deadline; a violation under rectification is verified, however long it takes).
AWAITING_VERIFICATION: frozenset[str] = frozenset({"issued", "verifying"})
#: The field verdicts; the first transition into one of them is the case's verification time.
VERDICT_STATES: frozenset[str] = frozenset({"compliant", "false_alarm", "violation"})
#: Closed verdicts that suppress later clues over the same ground (unless the patch grew).
SUPPRESSING_STATES: frozenset[str] = frozenset({"compliant", "false_alarm"})

Tag = Literal["permitted", "outside_permit", "restoration_breach"]
TAGS: tuple[str, ...] = ("permitted", "outside_permit", "restoration_breach")

#: Why a case points at an older one: the site was disturbed again after the old case was
#: rectified and closed (``relapse``), or a patch grew materially over a case closed as a false
#: alarm or compliant (``regrowth``).
LinkReason = Literal["relapse", "regrowth"]

Priority = Literal["urgent", "high", "normal", "low"]
#: Lower rank sorts first.
PRIORITY_RANK: dict[str, int] = {"urgent": 0, "high": 1, "normal": 2, "low": 3}


def priority_rank(priority: str | None) -> int:
    """Sort key of a priority; unknown or missing priorities sort with ``normal``."""
    return PRIORITY_RANK.get(priority or "normal", PRIORITY_RANK["normal"])


def at_least(priority: str, floor: str) -> str:
    """The more urgent of two priorities."""
    return priority if priority_rank(priority) <= priority_rank(floor) else floor


def check_state(state: str) -> str:
    """Return ``state`` if it names a lifecycle state, else raise naming the valid ones."""
    if state not in TRANSITIONS:
        raise InvalidTransitionError(
            f"unknown case state {state!r}: use one of {', '.join(CASE_STATES)}"
        )
    return state


def check_transition(case_id: int, current: str, target: str) -> None:
    """Raise :class:`InvalidTransitionError` unless ``current → target`` is allowed."""
    check_state(target)
    allowed = TRANSITIONS[current]
    if target in allowed:
        return
    if not allowed:
        hint = f"{current} is a final state"
    else:
        hint = f"from {current} it can go to {', '.join(sorted(allowed))}"
    raise InvalidTransitionError(f"case {case_id} is {current} and cannot move to {target}: {hint}")
