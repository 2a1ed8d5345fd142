"""Helpers for operator authors' unit tests: run an operator on an image, without Ray.

``run_operator`` builds the operator as a replica does (checks its declaration, gives it an
:class:`~tilemore.operator.OperatorContext`, runs ``setup``), validates the parameters with its
``Params`` model and calls ``process`` once::

    from tilemore.testing import run_operator

    out = run_operator(MyOperator, np.zeros((32, 32, 3), np.uint8), {"amount": 2})
    assert out.pixels.shape == (32, 32, 3)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from tilemore.image import Image
from tilemore.operator import Operator, OperatorContext, OperatorParams
from tilemore.registry import OperatorRegistry, check_operator

__all__ = ["as_image", "make_operator", "run_operator"]

_CONTEXT_FIELDS = {f.name for f in fields(OperatorContext)}


def make_operator(operator: type[Operator] | str, **context: Any) -> Operator:
    """An operator instance, set up as a replica's is. ``operator`` is a class or the name
    of a built-in; ``context`` sets :class:`OperatorContext` fields (``device``,
    ``tile_memory_bytes``, ``max_input_pixels``, ``options``)."""
    cls = OperatorRegistry.with_builtins().get(operator) if isinstance(operator, str) \
        else operator
    check_operator(cls)
    unknown = set(context) - _CONTEXT_FIELDS
    if unknown:
        raise TypeError(f"unknown context field(s) {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(sorted(_CONTEXT_FIELDS))}")
    op = cls()
    op.context = OperatorContext(**context)
    op.setup()
    return op


def as_image(value: Image | np.ndarray) -> Image:
    """An :class:`Image` from itself or from ``(height, width, 3|4)`` uint8 pixels (a 2-D
    array is taken as grey and repeated into RGB)."""
    if isinstance(value, Image):
        return value
    pixels = np.asarray(value)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return Image(np.ascontiguousarray(pixels))


def run_operator(operator: type[Operator] | str, image: Image | np.ndarray | bytes,
                 params: Mapping[str, Any] | OperatorParams | None = None, *,
                 candidates: Sequence[Image | np.ndarray] = (), **context: Any) -> Any:
    """Run ``operator`` once on ``image`` and return what ``process`` returns: an
    :class:`Image` (transform, source), an :class:`~tilemore.image.Encoded` (sink) or a
    :class:`~tilemore.operator.Selection` (selector, which also takes ``candidates``).

    ``image`` is bytes for a source, else an :class:`Image` or a pixel array. ``params``
    is a mapping checked by the operator's ``Params`` model (or a ``Params`` instance);
    ``context`` sets the operator's :class:`OperatorContext` fields."""
    op = make_operator(operator, **context)
    cls = type(op)
    if isinstance(params, OperatorParams):
        checked = params
    else:
        checked = cls.Params.model_validate(dict(params or {}))
    if cls.role == "source":
        if not isinstance(image, (bytes, bytearray, memoryview)):
            raise TypeError(f"'{cls.name}' is a source: give it the file's bytes")
        return op.process(checked, bytes(image))
    if isinstance(image, (bytes, bytearray, memoryview)):
        raise TypeError(f"'{cls.name}' is a {cls.role}: give it an Image or pixels, "
                        "not bytes (decode them first)")
    if cls.role == "selector":
        if len(candidates) < 2:
            raise TypeError(f"'{cls.name}' is a selector: give it candidates=[...] (two or "
                            "more)")
        return op.process(checked, as_image(image), *(as_image(c) for c in candidates))
    if candidates:
        raise TypeError(f"'{cls.name}' is a {cls.role}; only a selector takes candidates")
    return op.process(checked, as_image(image))
