"""Approximate US-dollar value of a paid event, so amounts in different currencies can be added.

Only money kinds count (Super Chats, Super Stickers, donations). Bits, gifted memberships and
subs store a *count* in `amount` with currency 'XXX' and have no dollar value here. The rates are
rough, fixed mid-2025 reference rates: good enough for a "has paid a lot before" feature, not
for accounting.
"""

from __future__ import annotations

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
