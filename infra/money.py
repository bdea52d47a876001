"""Money: the approximate US-dollar value of a paid event (a model feature), and amounts converted to
one display currency at the ECB rate of the event's date (what the dashboard shows).

Only money kinds count (Super Chats, Super Stickers, donations). Bits, gifted memberships and
subs store a *count* in `amount` with currency 'XXX' and have no dollar value here. The rates are
rough, fixed mid-2025 reference rates: good enough for a "has paid a lot before" feature, not
for accounting.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date
from typing import Any

from infra.events import MessageKind

MONEY_KINDS = frozenset({MessageKind.PAID_MESSAGE, MessageKind.PAID_STICKER, MessageKind.DONATION})

USD_PER_UNIT: dict[str, float] = {
    "USD": 1.0, "EUR": 1.08, "GBP": 1.27, "JPY": 0.0066, "KRW": 0.00073, "CAD": 0.73, "AUD": 0.66,
    "NZD": 0.60, "HKD": 0.128, "TWD": 0.031, "SGD": 0.74, "MXN": 0.055, "BRL": 0.18, "INR": 0.012,
    "IDR": 0.000061, "PHP": 0.017, "THB": 0.028, "MYR": 0.21, "VND": 0.000039, "CNY": 0.14,
    "RUB": 0.011, "TRY": 0.026, "UAH": 0.024, "PLN": 0.25, "CZK": 0.043, "HUF": 0.0027,
    "SEK": 0.095, "NOK": 0.093, "DKK": 0.145, "CHF": 1.12, "ZAR": 0.054, "ILS": 0.27, "ARS": 0.0009,
    "CLP": 0.00105, "COP": 0.00024, "PEN": 0.27, "EGP": 0.02, "NGN": 0.00065, "SAR": 0.27, "AED": 0.27,
    "BGN": 0.55, "RON": 0.22, "CRC": 0.0019,
}


def usd_value(kind: MessageKind | str, amount: float | None, currency: str | None) -> float:
    """Approximate dollars paid; 0.0 for counts (bits, gifts), unknown currencies and non-money kinds."""
    if MessageKind(kind) not in MONEY_KINDS or amount is None or currency is None:
        return 0.0
    return amount * USD_PER_UNIT.get(currency, 0.0)


# ------------------------------------------------------------------ display conversion (the dashboard)
#
# The fixed table above is a model *input* (past_paid_amount) and the event bounds: changing it would
# change what a trained model sees, so it stays fixed. What people read (revenue in one currency) uses
# the ECB reference rate of the event's own date instead, offline: the `currencyconverter` package
# ships the ECB history. A currency the ECB does not quote (TWD, VND, ARS, ...) goes through the fixed
# table to USD and is marked approximate.

# Currencies the ECB quotes today: the choices for `display_currency` (checked without loading the
# rate file; tests/test_dashboard/test_money.py checks this list against the package's).
DISPLAY_CURRENCIES = frozenset({
    "AUD", "BGN", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "HUF", "IDR", "ILS", "INR",
    "ISK", "JPY", "KRW", "MXN", "MYR", "NOK", "NZD", "PHP", "PLN", "RON", "SEK", "SGD", "THB", "TRY", "USD",
    "ZAR",
})


@functools.lru_cache(maxsize=1)
def ecb_rates() -> Any:
    """The ECB reference-rate history (about a second to load, so once per process, off the event loop)."""
    from currency_converter import CurrencyConverter

    return CurrencyConverter(fallback_on_missing_rate=True, fallback_on_wrong_date=True)


@dataclass(frozen=True)
class Converted:
    value: float  # in the display currency
    source: str  # "ECB <date>" or "fixed approximate rate" (a currency the ECB does not quote)


def convert(amount: float, currency: str, to: str, on: date) -> Converted | None:
    """`amount` of `currency` in `to` at the ECB rate of `on` (the nearest quoted day when the ECB did
    not publish that day); None for a currency neither the ECB nor the fixed table knows."""
    rates = ecb_rates()
    if currency == to:
        return Converted(amount, "same currency")
    if currency in rates.currencies:
        return Converted(float(rates.convert(amount, currency, to, date=on)), f"ECB {on.isoformat()}")
    usd = USD_PER_UNIT.get(currency)
    if usd is None:
        return None
    return Converted(float(rates.convert(amount * usd, "USD", to, date=on)), "fixed approximate rate")


def is_money(kind: MessageKind | str, currency: str | None) -> bool:
    """A payment in a real currency (not a count of bits or gifted memberships, whose currency is XXX)."""
    try:
        return MessageKind(kind) in MONEY_KINDS and bool(currency) and currency != "XXX"
    except ValueError:
        return False
