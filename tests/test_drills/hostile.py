"""Hostile values and a cheap mutation engine for the fuzz drills.

Hypothesis draws a seed for a *mutation program* (where, what, with which value) instead of whole random JSON
trees: programs are cheap to generate and shrink, so thousands of cases per reader fit in seconds, and every
case starts from a valid record built here, which keeps the fuzz deep inside the converters rather
than at their first type check.
"""

from __future__ import annotations

import copy
import math
import os
import random
from collections.abc import Callable
from pathlib import PosixPath
from typing import Any

from hypothesis import strategies as st

# The suite runs 3k derandomised cases per target (about 8 s each): past a few thousand, the same mutation
# kinds repeat and the suite's time budget is better spent on the Kafka fuzz, which draws a new seed every
# run (test_fuzz_worker.py). DONORCAST_FUZZ_EXAMPLES=10000 for a long pass, =500 for a quick one.
FUZZ_EXAMPLES = int(os.environ.get("DONORCAST_FUZZ_EXAMPLES", "3000"))



class Big(str):
    """A long string that reprs short, so a failing case stays readable."""

    def __repr__(self) -> str:
        return f"Big({self[:1]!r} * {len(self)})"


class Wire(bytes):
    """Bytes that repr at most 300 characters."""

    def __repr__(self) -> str:
        text = bytes.__repr__(self)
        return text if len(text) <= 300 else f"{text[:300]}...({len(self)} bytes)"


HUGE_TEXT = Big("é" * 60_000)  # > MAX_TEXT_CHARS and > 64 KiB of UTF-8
HUGE_DIGITS = Big("9" * 5_000)  # beyond Python's int-from-str limit (4300 digits)
SCRIPT = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"
SQL = "'); DROP TABLE chat_messages; --"
FORMULA = '=HYPERLINK("http://evil.example","x")'

# Values that have broken parsers before: wrong types, edge numbers, odd strings.
HOSTILE: tuple[Any, ...] = (
    None, "", " ", 0, -1, 1, 2**63, -(2**63), 10**400, 0.0, -0.0, -5.0, 1e308, -1e308, 5e-324,
    math.nan, math.inf, -math.inf, True, False, [], {}, [None], {"": None}, [[[]]], {"a": {"b": {}}},
    "NaN", "Infinity", "-1", "1e309", "0x10", HUGE_DIGITS, HUGE_TEXT, "\x00", "a\x00b", "\ud800", "\udfff\ud800",
    "\u202e\u2066rtl", "\ufeff", "\n\r\t", "%s%n%x", "{0}", SCRIPT, SQL, FORMULA, "NULL", "null", Big("💸" * 50),
    "2999-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "0001-01-01T00:00:00", "9999-12-31T23:59:59+14:00",
    "2024-02-30T00:00:00Z", "yesterday", "¥5,000", "$-5.00", "€1.234.567,89", "ZZZ", "usd", "US", "XXX",
    "₿0.1", ":_member:",
)
OPS = ("set", "set", "set", "delete", "wrap", "stringify", "truncate", "add")
# Characters that break naive text handling: NUL, lone surrogates, RTL overrides, combining marks, emoji.
NASTY_CHARS = "\x00\x01\x7f\u0085\u2028\u2029\ud800\udfff\u202e\u200d\u0301\ufeff\uffff😀🏳️‍🌈<>&'\";\\é中"
PRINTABLE = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 .,:_-+=@$¥€"


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A hostile constant, or a random scalar, short string, list or object."""
    roll = rng.random()
    if roll < 0.45:
        return rng.choice(HOSTILE)
    if roll < 0.55:
        return rng.choice((rng.randint(-(2**70), 2**70), rng.randint(-10, 10), rng.uniform(-1e6, 1e6)))
    if roll < 0.85 or depth > 1:
        pool = NASTY_CHARS if rng.random() < 0.5 else PRINTABLE
        return "".join(rng.choice(pool) for _ in range(rng.randint(0, 12)))
    if roll < 0.93:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 2))]
    return {str(random_value(rng, 2)) if rng.random() < 0.2 else f"k{rng.randint(0, 9)}": random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 2))}


class Program(list):  # type: ignore[type-arg]
    """A mutation program built from a seed; its repr names the seed, so a failure is reproducible."""

    seed: int = 0

    def __repr__(self) -> str:
        return f"Program(seed={self.seed}, steps={[(w, op, v) for w, op, v in self]!r})"[:600]


def program_from(seed: int, max_steps: int = 4) -> Program:
    rng = random.Random(seed)
    program = Program(
        (rng.randrange(2**16), rng.choice(OPS), random_value(rng)) for _ in range(rng.randint(0, max_steps))
    )
    program.seed = seed
    return program


# Hypothesis draws only a seed (cheap to generate, replay and report); Python's random builds the
# program. Drawing whole JSON trees with Hypothesis costs ~2 ms a case: 10k cases would take minutes.
mutation_programs = st.integers(min_value=0, max_value=2**62).map(program_from)
seeds = st.integers(min_value=0, max_value=2**62)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key / index path in a JSON-like value, parents before children."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.append((*prefix, key))
            found.extend(paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.append((*prefix, index))
            found.extend(paths(child, (*prefix, index)))
    return found


def _parent(root: Any, path: tuple[Any, ...]) -> Any:
    node = root
    for step in path[:-1]:
        node = node[step]
    return node


def mutate(record: Any, program: list[tuple[int, str, Any]]) -> Any:
    """Apply a mutation program to a deep copy of `record`."""
    out = copy.deepcopy(record)
    for where, op, shared in program:
        value = copy.deepcopy(shared)  # never alias (and then grow) a constant of HOSTILE
        candidates = paths(out)
        if not candidates:
            return value if op == "set" else out
        path = candidates[where % len(candidates)]
        try:
            parent = _parent(out, path)
            key = path[-1]
            current = parent[key]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier step reshaped the tree
        if op == "set":
            parent[key] = value
        elif op == "delete":
            del parent[key]
        elif op == "wrap":
            parent[key] = [current]
        elif op == "stringify":
            parent[key] = str(current)
        elif op == "truncate":
            if isinstance(current, str):
                parent[key] = current[: where % (len(current) + 1)]
            elif isinstance(current, list | dict):
                parent[key] = type(current)()
        elif op == "add" and isinstance(parent, dict):
            parent[f"extra{where % 7}"] = value
    return out


class MemoryPath(PosixPath):
    """A Path whose bytes live in memory: a reader's real `read()` runs without touching the disk."""

    _content: bytes = b""

    @classmethod
    def holding(cls, name: str, content: bytes | str) -> MemoryPath:
        path = cls(f"/fuzz/{name}")
        path._content = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
        return path

    def read_bytes(self) -> bytes:
        return self._content

    def read_text(self, encoding: str | None = None, errors: str | None = None) -> str:
        return self._content.decode(encoding or "utf-8", errors or "strict")

    def open(self, mode: str = "r", *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        import io

        if "b" in mode:
            return io.BytesIO(self._content)
        return io.StringIO(self.read_text(kwargs.get("encoding"), kwargs.get("errors")))

    def exists(self) -> bool:  # type: ignore[override]
        return True

    def is_file(self) -> bool:  # type: ignore[override]
        return True

    def is_dir(self) -> bool:  # type: ignore[override]
        return False


def raises_only(expected: tuple[type[BaseException], ...], call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """(result, None) or (None, the expected error); any other exception propagates (= a drill failure)."""
    try:
        return call(), None
    except expected as error:
        return None, error
