"""The OpenAPI document describes the API: it passes openapi-spec-validator, names the two
security schemes (so /docs can make a real call), gives the submission's JSON and multipart
bodies, lists each route's error codes, and the service's real answers fit its models."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from openapi_spec_validator import validate
from support.images import encode, noisy, photo
from support.service_harness import Service, http

from tilemore.api import schemas
from tilemore.api.app import create_app

ENV = {"output_format": "png", "adjustments": {"master": {"algorithm": "bilateral"}}}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    s = Service(tmp_path_factory.mktemp("openapi"), rate_limit_requests_per_second=1000)
    yield s
    s.close()


def test_the_document_is_valid_and_complete():
    doc = create_app().openapi()
    validate(doc)  # raises on any error
    assert {"bearer", "token_domain"} <= set(doc["components"]["securitySchemes"])
    assert doc["security"] == [{"bearer": []}, {"token_domain": []}]
    paths = doc["paths"]
    assert paths["/healthz"]["get"]["security"] == []
    assert paths["/billing/payment-notifications"]["post"]["security"] == []
    submit = paths["/{meta_parts}/submitted/{image_sha256}/"]["post"]
    content = submit["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert content["multipart/form-data"]["encoding"]["envelope"]["contentType"] == \
        "application/json"
    assert "413" in submit["responses"] and "`image_too_large`" in \
        submit["responses"]["413"]["description"]
    assert submit["responses"]["202"]["content"]["application/json"]["schema"]["$ref"] == \
        "#/components/schemas/ThreadAnswer"
    listing = paths["/threads"]["get"]["responses"]
    assert "`invalid_cursor`" in listing["400"]["description"]
    assert {"Retry-After", "RateLimit", "RateLimit-Policy"} <= set(listing["429"]["headers"])
    for path, item in paths.items():
        for method, op in item.items():
            assert "422" not in op["responses"] or "unprocessable" in \
                op["responses"]["422"]["description"].lower(), (method, path)
            if op.get("security") != []:
                assert "`insufficient_scope`" in op["responses"]["403"]["description"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    params = {p["name"]: p["schema"] for p in paths["/threads"]["get"]["parameters"]}
    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
    assert params["meta_part"]["maxItems"] == 8
    sha = {p["name"]: p["schema"] for p in submit["parameters"]}["image_sha256"]
    assert sha["pattern"] == "^[0-9a-f]{64}$"


def test_real_answers_fit_the_models(svc):
    auth = {"Authorization": f"Bearer {svc.token}"}
    image = encode(noisy(photo(48, 32), 10, seed=1), "PNG")

    def call(method, path, body=None, headers=None):
        data = None if body is None else json.dumps(body).encode()
        return http(method, f"{svc.url}{path}", data,
                    {"Content-Type": "application/json", **(headers or auth)})

    asked = svc.submit(image, ENV, headers=auth, upload=False)
    schemas.NeedsFile.model_validate(asked.json())
    sent = svc.submit(image, ENV, headers=auth)
    schemas.ThreadAnswer.model_validate(sent.json())
    done = svc.wait(sent.json()["thread_id"], headers=auth)
    assert schemas.ThreadAnswer.model_validate(done).result is not None
    schemas.ThreadList.model_validate(call("GET", "/threads").json())
    schemas.Balance.model_validate(call("GET", "/billing/balance").json())
    schemas.History.model_validate(call("GET", "/billing/history").json())
    ops = schemas.Operations.model_validate(call("GET", "/billing/operations").json())
    assert ops.operations
    made = call("POST", "/billing/subaccounts", {"name": "studio"})
    schemas.Subaccount.model_validate(made.json())
    schemas.Subaccounts.model_validate(call("GET", "/billing/subaccounts").json())
    token = call("POST", "/billing/subaccounts/studio/tokens", {"scopes": ["read"]})
    schemas.IssuedToken.model_validate(token.json())
    svc.billing.order("acme", "more", Decimal("10"))
    paid = call("POST", "/billing/subaccounts/studio/payments",
                {"payment_id": "p1", "amount": "1"})
    assert schemas.Payment.model_validate(paid.json()).from_ == "acme"
    refused = call("GET", "/threads?limit=0")
    assert schemas.ErrorAnswer.model_validate(refused.json()).error.code == "invalid_limit"
    # what /docs does: read the document, then call with the scheme it offers
    served = http("GET", f"{svc.url}/openapi.json").json()
    assert served["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert http("GET", f"{svc.url}/docs").status == 200
    assert call("GET", "/billing/balance").status == 200
