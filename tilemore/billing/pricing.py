"""What work costs: an operator's own price unless an admin set another (plain data, so it
travels between processes without the operator classes)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from tilemore.billing.money import add
from tilemore.operator import Operator, Price
from tilemore.pipeline.graph import TaskGraph

Overrides = Mapping[str, tuple[Decimal, Decimal]]  # operator → (per call, per megapixel)


def price_of(operator: type[Operator], overrides: Overrides) -> Price:
    override = overrides.get(operator.name)
    if override is None:
        return operator.price
    return Price(per_call=override[0], per_megapixel=override[1])


def estimate(graph: TaskGraph, width: int, height: int, overrides: Overrides) -> Decimal:
    """An upper bound of what ``graph`` costs on a ``width``×``height`` input: each task
    priced at the larger of its input and output, sizes followed through the operators."""
    sizes = graph.sizes(width, height)
    total = Decimal(0)
    for task in graph.tasks:
        (wi, hi), (wo, ho) = sizes[task.id]
        mp = max(wi * hi, wo * ho) / 1e6
        total = add(total, price_of(task.operator, overrides).cost(mp))
    return total
