"""Is a process on this machine still running, and is it still the one we think it is?

Crash recovery needs to tell a live writer from a dead one: the run launcher asks it of a run
worker (its pid from the run's RUN_START event), storage of the process that named a temporary
file. A pid alone is not enough, because pids are reused (quickly, inside a container), so the
process's start time is compared with the moment it was last known to be working.
"""

from __future__ import annotations

import os
import re
import socket
from functools import cache
from pathlib import Path

PROC = Path("/proc")
# Clock jitter between /proc's tick-based start time and a file's or event's timestamp.
START_TIME_TOLERANCE_SECONDS = 2.0
_UNSAFE_HOST_CHARS = re.compile(r"[^A-Za-z0-9-]")


@cache
def host_name() -> str:
    """This machine's name as it can appear inside a file name (letters, digits and '-')."""
    return _UNSAFE_HOST_CHARS.sub("-", socket.gethostname()) or "localhost"


@cache
def _boot_time() -> float | None:
    try:
        for line in (PROC / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def process_start_time(pid: int) -> float | None:
    """Epoch seconds at which `pid` started, or None when it is gone, a zombie, or unknowable.

    Linux only (from /proc); elsewhere None, and callers fall back to `pid_exists`.
    """
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces; fields follow the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start_ticks = fields[0], fields[19]
    boot = _boot_time()
    if state in ("Z", "X") or boot is None:
        return None
    return boot + int(start_ticks) / os.sysconf("SC_CLK_TCK")


def pid_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


def process_alive_since(pid: int, seen_working_at: float) -> bool:
    """True when `pid` runs now and is the process that was working at `seen_working_at`.

    A process that started after that moment reuses the pid of one that died. Without /proc
    the start time is unknown, and a live pid is taken to be the same process.
    """
    if PROC.joinpath("self").exists():
        started = process_start_time(pid)
        return started is not None and started <= seen_working_at + START_TIME_TOLERANCE_SECONDS
    return pid_exists(pid)
