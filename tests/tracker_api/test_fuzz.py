"""OpenAPI-driven fuzzing with schemathesis over every operation, as an analyst.

Schemathesis generates valid and invalid requests from the app's own OpenAPI document and
checks every answer: never a 5xx, status codes, content types and bodies as documented,
invalid input rejected, and a request without the token refused. Bounded: a few examples per
operation and mode, so the run takes well under a minute.

The operations are driven through ``APIOperation.as_strategy`` with plain Hypothesis rather than
schemathesis' pytest plugin, whose fixture-based (lazy) schemas do not work with pytest 9.
"""

from __future__ import annotations

import json

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="fuzzing needs schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import Config, GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import negative_data_rejection  # noqa: E402

from changedetect.tracker import transition  # noqa: E402
from changedetect.tracker.api import create_app  # noqa: E402
from tests.factories import API_NOW  # noqa: E402

EXAMPLES = 15
#: Rules the OpenAPI document cannot state (they relate two values, or need the bbox parsed):
#: a request the schema allows may still be refused with a 422 that names one of these.
CROSS_FIELD_RULES = {("query", "bbox"), ("query", "detected_to")}
#: Nor that a photo id names an unattached photo of the case: a verdict naming another may be
#: refused with a 422 located there.
STORED_DATA_RULES = {("body", "photo_ids")}
#: Nor can it say that an upload's bytes must decode as a JPEG, PNG or WebP image: a photo
#: upload the schema allows may still be refused with 415.
CONTENT_RULE_OPERATIONS = {"POST /cases/{case_id}/photos"}


def valid_data_accepted(ctx, response, case):
    """The built-in positive-data check, less the 422s for the cross-field rules above."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code == 422:
        errors = response.json()["errors"]
        located = {tuple(e["loc"]) for e in errors}
        assert located <= CROSS_FIELD_RULES | STORED_DATA_RULES, (
            f"valid request refused: {response.json()['detail']}"
        )
    if response.status_code == 415:
        assert case.operation.label in CONTENT_RULE_OPERATIONS, "valid request answered 415"
        return None
    assert response.status_code in {200, 201, 204, 401, 403, 404, 409, 422}, (
        f"valid request answered {response.status_code}"
    )
    return None


def excluded(operation, mode) -> list:
    """Checks that cannot judge this operation fairly.

    Negative cases for the list filters (``county=...``, ``change_type=...``: arrays of strings
    in the query) mutate an item into a number, list or object; in a query string that item is
    sent as its text, which *is* a valid string, so accepting it is right and
    ``negative_data_rejection`` would report a false failure. Every other check still applies.
    """
    query_arrays = any(
        p.location == "query" and "array" in json.dumps(p.definition)
        for p in operation.iter_parameters()
    )
    if mode == GenerationMode.NEGATIVE and query_arrays:
        return [negative_data_rejection]
    return []


def operation_inputs(operation) -> list:
    """The operation's parameters and bodies (what a negative case could break)."""
    return [*operation.iter_parameters(), *operation.body]


def fuzz(operation, mode, headers: dict[str, str]) -> str | None:
    """Run one operation in one generation mode; the failure report, or None."""
    skip = excluded(operation, mode)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests every run: a failure reproduces
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        case.call_and_validate(
            headers=headers, additional_checks=[valid_data_accepted], excluded_checks=skip
        )

    try:
        run()
    except Unsatisfiable:
        # an operation without parameters or body has no invalid request to make
        assert mode == GenerationMode.NEGATIVE and not operation_inputs(operation)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # reported: one run lists every failing operation
        return f"{operation.label} [{mode.value}]: {exc}"
    return None


def test_every_operation_survives_fuzzing(db, seeded):
    app = create_app(db, now=API_NOW)
    # a schema-valid transition can still meet a case in a state that forbids it (409) or a
    # role rule (403): valid input, refused on purpose. valid_data_accepted judges the rest.
    config = Config.from_dict({"checks": {"positive_data_acceptance": {"enabled": False}}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    headers = {"Authorization": f"Bearer {seeded.tokens['analyst']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13  # every route is in the document
    failures = [
        failure
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if (failure := fuzz(operation, mode, headers)) is not None
    ]
    assert not failures, "\n\n".join(failures)


def test_the_field_record_operations_survive_fuzzing_on_cases_being_verified(db, seeded):
    """The upload, photo and verdict routes answer only for cases being verified: put every case
    there first, so the generated photos and verdicts reach the content checks."""
    for case_id in seeded.case_ids.values():
        transition(db, case_id, "verifying", actor="ana.lyst", now=API_NOW)
    app = create_app(db, now=API_NOW)
    config = Config.from_dict({"checks": {"positive_data_acceptance": {"enabled": False}}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    headers = {"Authorization": f"Bearer {seeded.tokens['officer']}"}
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())
        if "/photos" in op.label or op.label.endswith("/verification")
    ]
    assert len(operations) == 3
    failures = [
        failure
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if (failure := fuzz(operation, mode, headers)) is not None
    ]
    assert not failures, "\n\n".join(failures)
