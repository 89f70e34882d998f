"""Money is an integer number of rupiah, never a float (DESIGN.md section 2)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

Rupiah = Annotated[int, Field(ge=0, description="Amount in whole rupiah (integer, never a float)")]


def format_rupiah(amount: int) -> str:
    """``20000`` -> ``"Rp 20.000"`` (dot for thousands, no decimals)."""
    sign = "-" if amount < 0 else ""
    return f"{sign}Rp {abs(amount):,}".replace(",", ".")
