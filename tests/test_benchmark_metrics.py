"""The /metrics benchmark runs and prints its JSON line (timings are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "metrics_bench.py"
SMALL = [
    *("--events", "200", "--projections", "5", "--behind", "20"),
    *("--rounds", "2", "--appends", "20"),
]


def run(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, str(BENCH), *args, *SMALL],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    line, overhead = [json.loads(x) for x in out.stdout.splitlines()]
    assert overhead["workload"] == "instrumented_append"
    assert overhead["ratio"] > 0
    assert isinstance(line, dict)
    return line


def test_the_metrics_benchmark_prints_a_json_line_on_sqlite() -> None:
    line = run("--backend", "sqlite")
    assert (line["workload"], line["projections"], line["rounds"]) == ("metrics_scrape", 5, 2)
    assert isinstance(line["http"], dict)
    assert line["http"]["median_ms"] > 0
    assert isinstance(line["raw"], dict)
    assert line["raw"]["median_ms"] > 0


@pytest.mark.postgres
def test_the_metrics_benchmark_prints_a_json_line_on_postgres(postgres_url: str) -> None:
    line = run("--backend", "postgres", "--url", postgres_url)
    assert (line["backend"], line["workload"]) == ("postgres", "metrics_scrape")


def test_the_append_overhead_alone_on_memory() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--backend", "memory", "--appends", "50", "--rounds", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    (line,) = [json.loads(x) for x in out.stdout.splitlines()]
    assert (line["workload"], line["backend"], line["appends"]) == (
        "instrumented_append",
        "memory",
        50,
    )
    assert line["plain_rate"] > 0
