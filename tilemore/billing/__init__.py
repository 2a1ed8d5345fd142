"""Billing: credits as 20-digit decimals on an append-only, hash-chained ledger."""

from tilemore.billing.ledger import (
    Appended,
    DuplicateReference,
    Entry,
    InsufficientCredits,
    Ledger,
    SQLiteLedger,
    Verification,
    open_ledger,
)
from tilemore.billing.money import InvalidAmount, fmt, parse_amount

__all__ = [
    "Appended", "DuplicateReference", "Entry", "InsufficientCredits", "InvalidAmount",
    "Ledger", "SQLiteLedger", "Verification", "fmt", "open_ledger", "parse_amount",
]
