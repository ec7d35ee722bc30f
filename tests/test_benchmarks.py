"""The benchmark runner runs and prints well-formed JSON lines (timings are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
WORKLOADS = [
    "bulk_append",
    "batched_append",
    "sequential_append",
    "concurrent_append",
    "read_stream",
    "read_all",
    "read_all_memory",
    "w1_sequential",
    "w1_concurrent",
    "w1_latency",
    "load_stream",
    "load_snapshot",
    "catchup_document",
    "catchup_sql",
    "live_tail",
]
SQL_ONLY = ["inline_append", "unit_of_work"]
"""Workloads of the SQL backends only (inline projections, SQL in units of work)."""
WRITE_PATH = WORKLOADS[7:12]
NO_RAW = {"live_tail"}
"""Workloads with no raw-driver baseline (a latency of eventfold's own wake-ups)."""
COMMON_KEYS = {
    "backend",
    "workload",
    "events",
    "seconds",
    "unit",
    "ratio",
    "target",
    "meets_target",
    "better",
    "scale",
}
UNITS = {"events/s", "appends/s", "commands/s", "ms", "MB"}
FLOORS = {"memory": set(), "sqlite": {"flush_us"}, "postgres": {"roundtrip_us", "commit_us"}}
"""What each backend's lines say the machine cost just before the workload (probe.py)."""
FLOOR_KEYS = set().union(*FLOORS.values())


def run_benchmarks(*args: str) -> tuple[list[dict[str, object]], str]:
    out = subprocess.run(
        [sys.executable, str(RUNNER), *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert all(isinstance(line, dict) for line in lines)
    return lines, out.stderr


def check_line(line: dict[str, object], backend: str, has_raw: bool) -> None:
    assert line.keys() >= COMMON_KEYS, line
    assert "error" not in line
    assert line["backend"] == backend
    assert line["unit"] in UNITS
    assert isinstance(line["events"], int)
    assert line["events"] > 0
    assert isinstance(line["seconds"], float)
    is_rate = str(line["unit"]).endswith("/s")
    name, raw_name = ("rate", "raw_rate") if is_rate else ("value", "raw_value")
    value = line[name]
    assert isinstance(value, float)
    assert value > 0
    assert raw_name in line
    if has_raw:
        assert isinstance(line[raw_name], float)
        assert isinstance(line["ratio"], float)
    else:
        assert line[raw_name] is None
        assert line["ratio"] is None
    assert line["meets_target"] in (True, False, None)
    assert line["better"] in ("higher", "lower")
    for floor in FLOORS[backend]:
        cost = line[floor]
        assert isinstance(cost, float), floor
        assert cost > 0
    assert not FLOOR_KEYS - FLOORS[backend] & line.keys()


def test_every_workload_on_memory_prints_one_json_line_each() -> None:
    lines, stderr = run_benchmarks("--backend", "memory", "--scale", "0.001")
    assert [line["workload"] for line in lines] == WORKLOADS
    for line in lines:
        check_line(line, "memory", has_raw=False)
    assert "eventfold benchmarks: memory" in stderr
    by_name = {str(line["workload"]): line for line in lines}
    assert by_name["read_stream"]["unit"] == "ms"
    assert by_name["read_all_memory"]["unit"] == "MB"
    assert by_name["concurrent_append"]["unit"] == "appends/s"
    check_write_path(by_name)


def check_write_path(by_name: dict[str, dict[str, object]]) -> None:
    """The write path's lines carry their own keys."""
    for name in ("w1_sequential", "w1_concurrent"):
        line = by_name[name]
        assert line["unit"] == "commands/s"
        assert line["events"] == line["accounts"] * (line["rounds"] + 1)  # type: ignore[operator]
    assert by_name["w1_concurrent"]["tasks"] == 2  # capped by the 2 accounts of scale 0.001
    for key in ("p50_ms", "p99_ms", "p999_ms", "max_ms"):
        assert isinstance(by_name["w1_sequential"][key], float)
    latency = by_name["w1_latency"]
    assert latency["unit"] == "ms"
    assert isinstance(latency["commands_per_s"], float)
    assert isinstance(latency["p50_ms"], float)
    assert by_name["load_stream"]["unit"] == "ms"
    snapshot = by_name["load_snapshot"]
    assert snapshot["unit"] == "ms"
    assert snapshot["snapshot_version"] == snapshot["stream_events"] - snapshot["events"]  # type: ignore[operator]


def test_workloads_can_be_chosen() -> None:
    lines, _ = run_benchmarks(
        "--backend", "memory", "--scale", "0.001", "--workload", "read_all", "bulk_append"
    )
    assert [line["workload"] for line in lines] == ["read_all", "bulk_append"]


def test_the_write_path_workloads_can_run_alone(tmp_path: Path) -> None:
    lines, _ = run_benchmarks(
        "--backend", "sqlite", "--scale", "0.001", "--tmpdir", str(tmp_path), "--workload",
        *WRITE_PATH,
    )  # fmt: skip
    assert [line["workload"] for line in lines] == WRITE_PATH
    for line in lines:
        check_line(line, "sqlite", has_raw=True)
    assert list(tmp_path.iterdir()) == []


def test_sqlite_runs_beside_the_raw_driver(tmp_path: Path) -> None:
    lines, _ = run_benchmarks("--backend", "sqlite", "--scale", "0.001", "--tmpdir", str(tmp_path))
    assert [line["workload"] for line in lines] == WORKLOADS + SQL_ONLY
    for line in lines:
        check_line(line, "sqlite", has_raw=line["workload"] not in NO_RAW)
        assert isinstance(line["meets_target"], bool) or line["target"] is None
    check_write_path({str(line["workload"]): line for line in lines})
    assert list(tmp_path.iterdir()) == [], "the runner leaves no database files behind"


@pytest.mark.postgres
def test_postgres_runs_beside_the_raw_driver(postgres_url: str) -> None:
    # The runner replaces the URL's schema option with a scratch schema per workload.
    lines, _ = run_benchmarks("--backend", "postgres", "--url", postgres_url, "--scale", "0.001")
    assert [line["workload"] for line in lines] == WORKLOADS + SQL_ONLY
    for line in lines:
        check_line(line, "postgres", has_raw=line["workload"] not in NO_RAW)
        assert isinstance(line["meets_target"], bool) or line["target"] is None
    check_write_path({str(line["workload"]): line for line in lines})


def test_bad_arguments_are_refused() -> None:
    out = subprocess.run(
        [sys.executable, str(RUNNER), "--backend", "postgres"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 2
    assert "--url" in out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_the_sync_bridge_benchmark_prints_json_lines(backend: str) -> None:
    script = RUNNER.parent / "sync_bridge.py"
    out = subprocess.run(
        [sys.executable, str(script), "--backend", backend, "--scale", "0.005", "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    expected = ["append_one", "append_threads"] + (["read_all"] if backend == "sqlite" else [])
    assert [line["workload"] for line in lines] == expected
    for line in lines:
        assert line["backend"] == backend
        assert line["rate"] > 0
        assert line["async_rate"] > 0
        ratio = line["rate"] / line["async_rate"]
        assert line["ratio"] == pytest.approx(ratio, rel=0.01, abs=0.001)
