"""The README's promises hold: its example runs and its quick start is two commands."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_python_examples_run(tmp_path: Path) -> None:
    example, write_path, blocking, hybrid = blocks("python")
    script = tmp_path / "example.py"
    script.write_text(example)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    lines = out.stdout.splitlines()
    assert lines[0] == "1 2"
    assert lines[1].startswith("1 OrderPlaced OrderPlaced(order_id='1', total_cents=1250)")
    assert "'actor': 'ann'" in lines[2]
    assert "'correlation_id': 'checkout-77'" in lines[2]
    assert lines[3].startswith("2 2 ")
    script.write_text(write_path)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.splitlines() == ["1 10 True", "10"]
    script.write_text(blocking)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.splitlines() == ["conflict: the stream is at 1", "[5]"]
    script.write_text(hybrid)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.splitlines() == ["['crm.customer.CustomerRegistered', 'crm.outbox']"]


def test_quick_start_is_two_commands() -> None:
    quick = README.read_text().split("## Quick start", 1)[1].split("## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)```", quick, flags=re.S)
    assert len(commands) == 2
    assert all(len(c.strip().splitlines()) == 1 for c in commands)
    assert "eventfold demo" in commands[0]
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1].strip() in ci


def test_the_pythons_named_are_the_ones_ci_runs() -> None:
    ci = (README.parent / ".ci" / "run").read_text()
    loop = re.search(r"^for version in ([0-9. ]+); do$", ci, flags=re.M)
    assert loop is not None, ".ci/run loops over the Python versions it tests"
    tested = loop.group(1).split()
    project = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]
    prefix = "Programming Language :: Python :: "
    named = [c.removeprefix(prefix) for c in project["classifiers"] if c.startswith(prefix)]
    assert named == ["3", *tested]
    assert project["requires-python"] == f">={tested[0]}"
    listed = f"Python {', '.join(tested[:-1])} or {tested[-1]}"
    assert listed in README.read_text().split("## Quick start", 1)[1]
