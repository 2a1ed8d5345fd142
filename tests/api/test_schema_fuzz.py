"""A schema-driven fuzzer (schemathesis, every check on) against the real service over HTTP:
requests the document allows are accepted, requests it forbids are refused, every answer's
status, headers and body are documented, auth is enforced, and unknown routes and methods
answer the service's own error body with a true ``Allow``.

Bounded and reproducible: a few examples an operation, derandomized. Where a refusal hangs on
what no schema can say (the image must hash to the URL's SHA-256; the adjustments' stages are
the pipeline's; a cursor must be one the service gave; a search's syntax is the index's;
operations are kept for today and yesterday only), that status is listed as an accepted
answer for that operation alone, with the reason beside it."""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema
from support.service_harness import Service, http

# (operation, statuses a schema-valid request may still get, why)
SEMANTIC: list[tuple[str, list[int]]] = [
    # the uploaded bytes hash to another SHA-256 (400), are no image (400/415), the envelope's
    # stages or parameters are not the pipeline's (422), the account is not known (404)
    ("POST /submitted/{image_sha256}/", [400, 404, 415, 422]),
    ("POST /{meta_parts}/submitted/{image_sha256}/", [400, 404, 415, 422]),
    ("GET /threads", [400]),  # a cursor the service did not give: invalid_cursor
    ("GET /errors", [400]),  # a search the index's syntax rejects: invalid_query
    ("GET /billing/operations", [422]),  # a day other than today or yesterday
    ("POST /billing/subaccounts/{name}/payments", [402]),  # more than the domain has
    # a webhook URL whose host is private or does not resolve, a threshold without its event
    # (or the event without one), the domain's endpoints all taken
    ("POST /webhooks/endpoints", [422]),
]
DEFAULT_ACCEPTED = ["2xx", "3xx", 401, 403, 404, 409, 429, "5xx"]


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    # The failed-auth throttle (429 after a burst of bad tokens from one client) has its own
    # tests; the fuzzer sends hundreds of bad tokens on purpose.
    s = Service(tmp_path_factory.mktemp("fuzz"), auth_failure_burst=1_000_000,
                auth_failure_per_second=1_000_000.0)
    # Webhook hosts the fuzzer makes up resolve to a public address, without DNS.
    s.api.webhook_resolve = lambda host, port: ["93.184.215.14"]
    yield s
    s.close()


def fuzz(svc: Service, max_examples: int, seed: int = 16) -> tuple[list[str], int]:
    """Every phase (examples, coverage, fuzzing, stateful links) with every check, as
    ``st run --checks all`` does: the failures found, one line each, and the cases run."""
    config = SchemathesisConfig.from_dict({
        "seed": seed,
        "headers": {"Authorization": f"Bearer {svc.token}"},
        "generation": {"max-examples": max_examples, "deterministic": True},
        "operations": [
            {"include-name": name, "checks": {"positive_data_acceptance": {
                "expected-statuses": DEFAULT_ACCEPTED + statuses}}}
            for name, statuses in SEMANTIC],
    })
    schema = schemathesis.openapi.from_url(f"{svc.url}/openapi.json", config=config)
    found: dict[str, None] = {}
    cases = 0
    for event in from_schema(schema).execute():
        if isinstance(event, events.FatalError | events.NonFatalError):
            found[f"{type(event).__name__}: {getattr(event, 'exception', None) or event.value}"
                  ] = None
        recorder = getattr(event, "recorder", None)
        if not isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished) or \
                recorder is None:
            continue
        cases += len(recorder.interactions)
        for case_id, nodes in recorder.checks.items():
            for node in nodes:
                if node.failure_info is not None:
                    failure = node.failure_info.failure
                    found[f"{recorder.label}: {failure.title}: {failure.message[:300]}\n"
                          f"    {_answer(recorder, case_id)}\n"
                          f"    {node.failure_info.code_sample[:600]}"] = None
    return list(found), cases


def test_the_service_answers_as_its_document_says(svc):
    failures, cases = fuzz(svc, max_examples=25)
    assert cases > 300  # it ran
    assert failures == [], "\n".join(failures)



# What the fuzzer found, each fixed, each pinned here in a plain request.

def test_unknown_routes_and_methods_answer_the_service_error_body(svc):
    r = http("GET", f"{svc.url}/no/such/route", headers=svc.auth())
    assert (r.status, r.code) == (404, "not_found")
    r = http("OPTIONS", f"{svc.url}/billing/subaccounts", headers=svc.auth())
    assert (r.status, r.code) == (405, "method_not_allowed")
    assert r.headers["allow"] == "GET, POST"  # both routes' methods, not the first's
    r = http("DELETE", f"{svc.url}/threads/t1", headers=svc.auth())
    assert (r.status, r.headers["allow"]) == (405, "GET")


def test_billing_bodies_take_numbers_where_no_amount_is(svc):
    headers = {**svc.auth(), "Content-Type": "application/json"}
    r = http("POST", f"{svc.url}/billing/subaccounts",
             b'{"name": "fuzz", "note": {"x": 1.5e300}}', headers)
    assert r.status in (200, 201), r.body  # 200: the fuzzer made it already
    r = http("POST", f"{svc.url}/billing/subaccounts/fuzz/payments",
             b'{"payment_id": "p1", "amount": 1.5}', headers)
    assert (r.status, r.code) == (422, "invalid_amount")  # an amount is still a string
    r = http("POST", f"{svc.url}/billing/subaccounts/fuzz/tokens", b'{"scopes": null}',
             headers)
    assert r.status == 201 and r.json()["scopes"] == ["submit", "read", "billing"]


def test_parameters_take_exactly_what_the_document_says(svc):
    def get(path: str) -> tuple[int, str | None]:
        r = http("GET", f"{svc.url}{path}", headers=svc.auth())
        return r.status, r.code

    assert get("/billing/operations?date=") == (400, "invalid_date")
    assert get("/billing/operations?date=20261207") == (400, "invalid_date")
    assert get("/threads?created_since=2026-01-31T12:00:00Z")[0] == 200
    assert get("/threads?created_since=2026-01-31")[0] == 200
    assert get("/threads?created_since=1769860800.5")[0] == 200
    assert get("/threads?created_since=0000000000000000000000000000000000000000") == \
        (400, "invalid_filter")
    assert get("/threads?created_since=2026-02-30") == (400, "invalid_filter")


def _answer(recorder, case_id: str) -> str:
    interaction = recorder.interactions.get(case_id)
    response = interaction.response if interaction is not None else None
    if response is None:
        return "(no answer)"
    return f"{response.status_code} {response.content[:300]!r}"
