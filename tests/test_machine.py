"""The machine a figure of time was measured on, as cards and benchmark results name it."""

from __future__ import annotations

import os
from pathlib import Path

from app.contract.machine import describe_machine, processor_name


def test_the_processor_is_named_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu\n")
    assert processor_name(cpuinfo) == "AMD EPYC 7B13"


def test_without_cpuinfo_the_processor_is_still_named(tmp_path: Path) -> None:
    assert processor_name(tmp_path / "absent") != ""
    (tmp_path / "no-model").write_text("processor\t: 0\n")
    assert processor_name(tmp_path / "no-model") != ""


def test_the_description_says_cores_and_no_gpu() -> None:
    description = describe_machine()
    assert description.endswith(f", {os.cpu_count()} cores, no GPU")
    if Path("/proc/cpuinfo").is_file():
        assert processor_name() in description
