"""The README's promises hold: its example runs and its quick start is two commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_python_examples_run(tmp_path: Path) -> None:
    example, write_path = blocks("python")
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


def test_quick_start_is_two_commands() -> None:
    quick = README.read_text().split("## Quick start", 1)[1].split("## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)```", quick, flags=re.S)
    assert len(commands) == 2
    assert all(len(c.strip().splitlines()) == 1 for c in commands)
    assert "eventfold demo" in commands[0]
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1].strip() in ci
