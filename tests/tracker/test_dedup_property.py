"""Property: a second patch joins the first one's case exactly when the overlap rule says so."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from changedetect.tracker import TrackerDB, TrackerSettings, ingest, upgrade
from tests.factories import NOW, collection, feature, rect

sizes = st.floats(min_value=30, max_value=150)
shifts = st.floats(min_value=-160, max_value=160)


@settings(max_examples=40, deadline=None)
@given(w1=sizes, h1=sizes, w2=sizes, h2=sizes, dx=shifts, dy=shifts)
def test_second_patch_joins_iff_overlap_reaches_the_rule(w1, h1, w2, h2, dx, dy):
    # the rule, computed independently on the rectangles in metres
    ox = max(0.0, min(w1, dx + w2) - max(0.0, dx))
    oy = max(0.0, min(h1, dy + h2) - max(0.0, dy))
    share = ox * oy / min(w1 * h1, w2 * h2)
    rule = TrackerSettings().min_overlap
    assume(abs(share - rule) > 1e-3)  # projection round-off decides nothing right at the edge
    db = TrackerDB("sqlite://")  # in memory: a fresh ledger per example
    try:
        upgrade(db.engine)
        ingest(db, collection([feature("p1", rect(0, 0, w1, h1))]), now=NOW)
        report = ingest(
            db, collection([feature("p2", rect(dx, dy, w2, h2), "2025-07-03")]), now=NOW
        )
    finally:
        db.close()
    expected = "updated" if share >= rule else "created"
    assert report.outcomes[0].action == expected, share
