"""Money as shown in chat ("$4.99", "¥5,000", "CA$10.00", "RUB 400.00", "₩1,000") -> amount + ISO 4217.

YouTube shows a Super Chat's price in the viewer's locale: a symbol or a code, then the number
with locale separators. Symbols that several currencies share ("$") map to the one YouTube means
by the bare symbol (USD); anything we cannot name becomes 'XXX' and the shown text is kept, so no
amount is lost, only its currency is unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Symbol (as YouTube renders it) -> ISO 4217. Longest prefixes are tried first.
CURRENCY_SYMBOLS: dict[str, str] = {
    "$": "USD", "US$": "USD", "A$": "AUD", "AU$": "AUD", "CA$": "CAD", "C$": "CAD", "HK$": "HKD",
    "MX$": "MXN", "NT$": "TWD", "NZ$": "NZD", "R$": "BRL", "S$": "SGD", "SG$": "SGD", "£": "GBP",
    "€": "EUR", "¥": "JPY", "￥": "JPY", "JP¥": "JPY", "CN¥": "CNY", "₩": "KRW", "￦": "KRW",
    "₹": "INR", "₪": "ILS", "₱": "PHP", "₫": "VND", "₽": "RUB", "₺": "TRY", "₴": "UAH", "zł": "PLN",
    "Kč": "CZK", "kr": "SEK", "Ft": "HUF", "฿": "THB", "RM": "MYR", "Rp": "IDR", "R": "ZAR",
    "CHF": "CHF", "Fr": "CHF", "₦": "NGN", "E£": "EGP", "₡": "CRC", "лв": "BGN", "lei": "RON",
}
UNKNOWN_CURRENCY = "XXX"

_NUMBER = re.compile(r"\d[\d.,\u00a0\u202f' ]*")
_ISO = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class Money:
    amount: float
    currency: str  # ISO 4217, or 'XXX' when the shown text names no currency we know
    text: str  # as shown


def currency_code(symbol_or_code: str | None) -> str:
    """ISO 4217 for a symbol or code as shown; 'XXX' when unknown."""
    if not symbol_or_code:
        return UNKNOWN_CURRENCY
    token = symbol_or_code.strip()
    if _ISO.match(token):
        return token
    if token in CURRENCY_SYMBOLS:
        return CURRENCY_SYMBOLS[token]
    upper = token.upper()
    if _ISO.match(upper) and upper != token:
        return upper
    return UNKNOWN_CURRENCY


def _to_float(number: str) -> float:
    """Locale-agnostic: the last '.' or ',' followed by 1-2 digits is the decimal mark."""
    digits = re.sub(r"[\s\u00a0\u202f']", "", number).rstrip(".,")
    match = re.match(r"^(.*?)[.,](\d{1,2})$", digits)
    if match:
        whole, fraction = match.groups()
        return float(re.sub(r"[.,]", "", whole) + "." + fraction) if whole else float("0." + fraction)
    return float(re.sub(r"[.,]", "", digits))


def parse_money(text: str) -> Money:
    """Parse a shown price; raises ValueError naming the text when it holds no number."""
    shown = text.strip()
    match = _NUMBER.search(shown)
    if not match:
        raise ValueError(f"amount {text!r} holds no number")
    amount = _to_float(match.group(0))
    before = shown[: match.start()].strip()
    after = shown[match.end():].strip()
    code = currency_code(before) if before else UNKNOWN_CURRENCY
    if code == UNKNOWN_CURRENCY and after:
        code = currency_code(after.split()[0])
    if code == UNKNOWN_CURRENCY and before:
        # e.g. "[UNREGISTERD]10,800" or a symbol we do not know: try the tail of the prefix
        tail = re.split(r"[\s\]\)]", before)[-1]
        if tail and tail != before:
            code = currency_code(tail)
    return Money(amount=amount, currency=code, text=shown)
