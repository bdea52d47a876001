"""JSON and CSV encodings of dashboard rows; CSV cells a spreadsheet would run as formulas are defused."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any) -> str:
    return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"))


SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A YouTube handle (@name: letters, digits, _ - . and the middle dot) is a name, not a formula: kept as is.
_HANDLE = re.compile(r"@[\w.\-\u00b7]{1,100}")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def looks_like_formula(text: str) -> bool:
    """Would a spreadsheet evaluate this cell? = always; + and - unless it is a plain number; @ unless it
    is a plain handle; a leading tab or CR (a formula behind whitespace)."""
    if not text.startswith(FORMULA_START):
        return False
    if text[0] == "@":
        return not _HANDLE.fullmatch(text)
    if text[0] in "+-":
        return not _NUMBER.fullmatch(text)
    return True


def csv_cell(value: Any) -> Any:
    """A cell a spreadsheet shows as text: a string that a spreadsheet would run as a formula gets a
    leading apostrophe; anything else (@handles, "-1.5") is written unchanged."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else dumps(value)
    return "'" + text if looks_like_formula(text) else text


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(column)) for column in columns])
    return out.getvalue()


LEADERBOARD_COLUMNS = ("rank", "viewer_id", "viewer_name", "probability", "lift", "n_messages", "low_confidence",
                       "paid_events", "paid_amounts", "paid_total", "display_currency", "paid_breakdown",
                       "rank_before_paid", "hit", "model_version", "event_time", "scored_at")
SUMMARY_COLUMNS = ("stream_id", "platform", "title", "state", "first_message_at", "last_message_at",
                   "messages", "viewers", "paid_events", "payers", "base_rate", "base_rate_source", "paid_totals",
                   "revenue", "display_currency", "revenue_breakdown", "paid_counts", "scored_viewers", "k",
                   "precision_at_k", "hit_rate_at_k", "payers_ranked_before_paying", "model_versions")


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return text_response(dumps(value), "application/json; charset=utf-8", status, headers)


def text_response(text: str, content_type: str, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    from aiohttp import web

    return web.Response(body=text.encode(), status=status,
                        headers={**SECURITY_HEADERS, "Content-Type": content_type, **(headers or {})})
