"""Property: whatever a client sends as the envelope, parsing it and building its task graph
either succeeds or raises one of our errors (a 4xx with a code) — never another exception
(a 500) and never slowly (a hang). An accepted envelope's graph can be sized and priced."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tilemore.api.envelope import parse_envelope
from tilemore.api.service import check_output_sizes
from tilemore.billing.pricing import estimate
from tilemore.errors import TilemoreError
from tilemore.pipeline.graph import build_graph

BOUNDED = settings(max_examples=100, deadline=2000,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])
FAST = 1.0  # seconds: one envelope is checked on a request's path (the attack took 6 s)
SIZES = [(1, 1), (96, 72), (4000, 3000), (65_535, 1)]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["16:9", "1:1", "1.5", "0", "0:1", "1e10000000", "-3", " 4 : 3 ", "nan",
                     "jpeg", "png", "webp", "gif", "fit", "fill", "limit", "force", "center",
                     "nlmeans", "bilateral", "guided", "dncnn", "qc", "#fff", "red", ""]),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                           max_leaves=20)


def adjustments_for(catalog) -> st.SearchStrategy:
    """Adjustments shaped like the real ones: stage names, their operators' parameter names
    (and algorithm/branches), with arbitrary JSON values."""
    stages, params = set(), set()
    for pipeline in catalog.pipelines.values():
        stages.update(pipeline.stage_names)
    for op in catalog.registry:
        params.update(op.Params.model_fields)
        for field in op.Params.model_fields.values():
            sub = getattr(field.annotation, "model_fields", None)
            params.update(sub or ())
    for nested in ("crop", "resize"):
        params.add(nested)
    keys = st.sampled_from(sorted(params | {"algorithm", "branches", "x", "y", "width",
                                            "height", "aspect", "mode", "gravity"}))
    value = st.one_of(json_values,
                      st.dictionaries(keys, json_values, max_size=5),
                      st.dictionaries(st.sampled_from(["nlmeans", "bilateral", "guided",
                                                       "dncnn", "x"]),
                                      st.dictionaries(keys, json_values, max_size=3),
                                      max_size=3))
    stage = st.dictionaries(keys, value, max_size=5)
    return st.dictionaries(st.sampled_from(sorted(stages | {"nope"})), stage, max_size=4)


def envelopes(catalog) -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {"adjustments": adjustments_for(catalog)},
        optional={"output_format": st.one_of(st.sampled_from(["jpeg", "png", "webp", "gif"]),
                                             json_values),
                  "pipeline": st.one_of(st.sampled_from(sorted(catalog.pipelines)),
                                        json_values),
                  "meta": json_values, "account": json_values, "surprise": json_values})


def check(catalog, raw: bytes | str) -> None:
    """The ingress's own order: parse, then the graph, then sizes and the estimate."""
    started = time.monotonic()
    try:
        env = parse_envelope(raw)
        pipeline = catalog.pipeline(env.pipeline or "denoised")
        graph = build_graph(pipeline, env.adjustments, env.output_format)
        for w, h in SIZES:
            try:
                check_output_sizes(graph, w, h, 250_000_000)
            except TilemoreError:
                continue
            assert estimate(graph, w, h, {}) >= 0
    except TilemoreError as err:
        assert 400 <= err.status < 500, (err, err.status)
        assert err.code
    assert time.monotonic() - started < FAST, raw[:200]


@BOUNDED
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes(catalog, raw):
    check(catalog, raw)


@BOUNDED
@given(value=json_values)
def test_arbitrary_json(catalog, value):
    check(catalog, json.dumps(value))


@BOUNDED
@given(data=st.data())
def test_envelopes_shaped_like_real_ones(catalog, data):
    check(catalog, json.dumps(data.draw(envelopes(catalog))))


@BOUNDED
@given(digits=st.text("0123456789", min_size=1, max_size=60),
       exponent=st.one_of(st.just(""), st.integers(-10**9, 10**9).map(lambda e: f"e{e}")),
       fraction=st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=20)
                          .map(lambda f: "." + f)),
       where=st.sampled_from(['{"adjustments": {"shifter": {"resize": {"width": %s}}}}',
                              '{"adjustments": {"encoder": {"quality": %s}}}',
                              '{"adjustments": {"shifter": {"crop": {"aspect": "%s"}}}}',
                              '{"adjustments": {}, "meta": {"n": %s}}']))
def test_numbers_of_any_length_and_exponent(catalog, digits, exponent, fraction, where):
    """JSON numbers (and aspect strings) with many digits or huge exponents are refused or
    used, fast: the 1e10000000 attack and its kin."""
    number = digits.lstrip("0") or "0"
    check(catalog, where % (number + fraction + exponent))


@pytest.mark.parametrize("text", ["1e10000000", "1e999999:1", "9" * 31, "1" * 6 + "." + "1" * 7])
def test_known_aspect_attacks_refused_fast(catalog, text):
    raw = json.dumps({"adjustments": {"shifter": {"crop": {"aspect": text}}},
                      "pipeline": "thumbnail"})
    started = time.monotonic()
    with pytest.raises(TilemoreError) as err:
        build_graph(catalog.pipeline("thumbnail"), parse_envelope(raw).adjustments)
    assert err.value.code == "invalid_parameter"
    assert time.monotonic() - started < 0.5
