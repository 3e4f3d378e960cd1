"""Which machine a figure of time was measured on: latencies and training times compare only within one."""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def processor_name(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name (Linux reports it in /proc/cpuinfo; platform.processor() is often empty there)."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def describe_machine() -> str:
    """e.g. "x86_64 AMD EPYC, 2 cores, no GPU" (the service and training here run on CPU only)."""
    return f"{platform.machine()} {processor_name()}, {os.cpu_count()} cores, no GPU"
