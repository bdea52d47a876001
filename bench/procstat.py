"""CPU seconds per process tree, read from /proc: which component of the pipeline used the cores.

On a 2-core machine the broker, PostgreSQL, the workers and the producer all compete; their CPU
seconds over a phase say where the time went better than any wall clock. Linux only; elsewhere
every reading is None. Children that already exited are not counted (only the live tree).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user+system CPU seconds) of one live process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing ')'.
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def _table() -> dict[int, tuple[int, float]]:
    out = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                out[int(entry)] = stat
    return out


def tree_cpu_seconds(pids: list[int]) -> dict[int, float | None]:
    """For each pid: CPU seconds of it and all its live descendants (None if it is gone)."""
    table = _table()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (parent, _) in table.items():
        children[parent].append(pid)
    result: dict[int, float | None] = {}
    for root in pids:
        if root not in table:
            result[root] = None
            continue
        total, stack = 0.0, [root]
        while stack:
            pid = stack.pop()
            total += table[pid][1]
            stack.extend(children.get(pid, ()))
        result[root] = total
    return result


def self_cpu_seconds() -> float:
    """This process (all threads), like time.process_time but comparable with /proc readings."""
    times = os.times()
    return times.user + times.system
