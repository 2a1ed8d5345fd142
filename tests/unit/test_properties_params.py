"""Property: every built-in operator's ``Params`` refuses what it cannot use with a pydantic
ValidationError (which the graph builder turns into a 422), raised fast, and never with any
other exception; whatever it accepts is usable: the operator's ``output_size`` and
``input_size_hint`` answer (or raise one of our errors, e.g. a crop box outside the image)."""

from __future__ import annotations

import time
import types
import typing
from typing import Any, Literal, Union

import annotated_types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from tilemore.catalog import Catalog
from tilemore.errors import TilemoreError

BOUNDED = settings(max_examples=80, deadline=2000,
                   suppress_health_check=[HealthCheck.too_slow])
FAST = 1.0  # seconds to validate one parameter set (on a request's path)
SIZES = [(1, 1), (7, 5), (96, 72), (4000, 3000), (65_535, 1), (1, 65_535)]
OPERATORS = sorted(Catalog.load().registry, key=lambda op: op.name)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(), st.text(max_size=40),
    st.sampled_from(["1e10000000", "16:9", "1:0", "0.000001:999999", "999999.999999",
                     "#fff", "rgb(1,2,3)", "hsl(400, 200%, -1%)", "jpeg", "4:2:0", "", "NaN"]),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=3),
                           max_leaves=12)


def near(bounds: list[Any]) -> st.SearchStrategy[int]:
    """Integers at and around a field's declared bounds, and far past them."""
    edges = [getattr(b, a) for b in bounds for a in ("ge", "gt", "le", "lt")
             if getattr(b, a, None) is not None]
    points = [e + d for e in edges for d in (-1, 0, 1)] + [0, 1, -1, 2**31, 2**63, 10**25]
    return st.sampled_from(points) | st.integers()


def for_type(annotation: Any, metadata: list[Any] = ()) -> st.SearchStrategy:
    """Values of a field's type, mostly near its constraints, sometimes of another type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return for_type(args[0], [*metadata, *args[1:]])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_dicts(annotation)
    if origin in (Union, types.UnionType):
        return st.one_of(*(for_type(a, metadata) for a in args))
    if origin is Literal:
        return st.sampled_from(args) | st.text(max_size=10)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(for_type(args[0]), max_size=40).map(tuple)
        return st.tuples(*(for_type(a) for a in args)) | st.lists(for_type(args[0]),
                                                                  max_size=4)
    if annotation is bool:
        return st.booleans() | st.sampled_from(["yes", "true", 0, 1, 2])
    if annotation is int:
        return near(list(metadata)) | st.floats(allow_nan=True)
    if annotation is float:
        edges = near(list(metadata))
        return edges.map(float) | st.floats() | edges
    if annotation is str:
        limit = next((m.max_length for m in metadata
                      if isinstance(m, annotated_types.MaxLen)), 40)
        return st.text(max_size=limit + 2) | json_values
    if annotation is type(None):
        return st.none()
    return json_values


def model_dicts(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts of a model's fields (each drawn from its type and constraints), sometimes with
    an unknown key."""
    fields = {name: for_type(f.annotation, f.metadata) | json_values
              for name, f in model.model_fields.items()}
    return st.fixed_dictionaries({}, optional={**fields, "unknown": json_values})


def usable(op: type, params: Any) -> None:
    hint = op.input_size_hint(params)
    assert hint is None or (len(hint) == 2 and all(isinstance(v, int) and v > 0
                                                  for v in hint)), hint
    for size in SIZES:
        try:
            w, h = op.output_size(params, size)
        except TilemoreError as err:
            assert 400 <= err.status < 500, err
            continue
        assert isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0, (w, h)


def validate(op: type, values: Any) -> None:
    started = time.monotonic()
    try:
        params = op.Params.model_validate(values)
    except ValidationError:
        pass
    else:
        usable(op, params)
    assert time.monotonic() - started < FAST, values


@pytest.mark.parametrize("op", OPERATORS, ids=lambda op: op.name)
@BOUNDED
@given(data=st.data())
def test_params_from_field_types(op, data):
    validate(op, data.draw(model_dicts(op.Params)))


@pytest.mark.parametrize("op", OPERATORS, ids=lambda op: op.name)
@settings(max_examples=40, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_params_from_arbitrary_json(op, data):
    keys = st.sampled_from([*op.Params.model_fields, "crop", "resize", "x"]) | st.text(
        max_size=8)
    values = data.draw(json_values | st.dictionaries(keys, json_values, max_size=5))
    validate(op, values)


def test_every_builtin_operator_is_covered():
    names = {op.name for op in OPERATORS}
    assert {"decode", "shifter", "encoder", "nlmeans", "bilateral", "guided", "dncnn",
            "qc-residual"} <= names
