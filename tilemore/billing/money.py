"""Credits: ``Decimal`` with 20 fractional digits, strings on the wire, never floats."""

from __future__ import annotations

from decimal import Context, Decimal, InvalidOperation

from tilemore.errors import TilemoreError

PLACES = 20
QUANTUM = Decimal(1).scaleb(-PLACES)
# NUMERIC(38, 20): 18 integer digits and 20 fractional ones. Every sum is taken in a context
# wide enough to hold them exactly (the default context keeps only 28 digits and would round).
CTX = Context(prec=60)
LIMIT = Decimal(10) ** 18
ZERO = Decimal(0).quantize(QUANTUM, context=CTX)


def add(*amounts: Decimal) -> Decimal:
    total = ZERO
    for a in amounts:
        total = CTX.add(total, a)
    return total


class InvalidAmount(TilemoreError):
    code = "invalid_amount"
    status = 422


class AmountOutOfRange(InvalidAmount):
    """An amount, or the balance or daily total it would make, at or past 10^18: the range
    both databases keep exactly (PostgreSQL's NUMERIC(38, 20) would overflow)."""

    code = "amount_out_of_range"


def check_range(value: Decimal, what: str) -> None:
    if value.copy_abs() >= LIMIT:  # abs() would round in the default context
        raise AmountOutOfRange(f"{what} would be {fmt(value)}; amounts and balances stay "
                               "below 10^18")


def parse_amount(value: object, *, positive: bool = True, field: str = "amount") -> Decimal:
    """A credit amount from JSON: a string of digits, at most 20 after the point."""
    if isinstance(value, bool) or not isinstance(value, str):
        kind = "a float" if isinstance(value, float) else type(value).__name__
        raise InvalidAmount(f"{field} must be a decimal string like \"12.5\", not {kind}")
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise InvalidAmount(f"{field} '{value}' is not a number") from None
    if not amount.is_finite():
        raise InvalidAmount(f"{field} '{value}' is not a finite number")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -PLACES:
        raise InvalidAmount(f"{field} '{value}' has more than {PLACES} fractional digits")
    if positive and amount <= 0:
        raise InvalidAmount(f"{field} must be greater than zero")
    if amount.copy_abs() >= LIMIT:  # abs() would round in the default context
        raise AmountOutOfRange(f"{field} must be below 10^18")
    return amount.quantize(QUANTUM, context=CTX)


def fmt(amount: Decimal) -> str:
    """The wire form: always 20 fractional digits, e.g. '0.00061677849800000000'."""
    return f"{amount.quantize(QUANTUM, context=CTX):f}"
