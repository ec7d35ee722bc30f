"""The HTTP benchmark runs and prints its two JSON lines (timings are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "http_api.py"


def test_the_http_benchmark_prints_json_lines() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--clients", "2", "--per-client", "2", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["workload"] for line in lines] == ["http_append", "http_read_page"]
    assert lines[0]["appends"] == 4
    assert all(line["ratio"] > 0 for line in lines)
    assert lines[0]["api_floor_ratio"] > 0
    assert lines[0]["access_log"] is False
    assert {"http_cpu_us", "floor_cpu_us", "api_floor_cpu_ratio"} <= lines[0].keys()
    assert lines[1]["plain_ratio"] > 0
    assert lines[1]["api_plain_ratio"] > 0
