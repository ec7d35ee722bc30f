"""``eventfold token`` and ``eventfold serve``, run as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from eventfold.cli import cli
from eventfold.web import Tokens

APP = """
from eventfold.projections import DocumentProjection

counts = DocumentProjection("counts", document=dict)


@counts.on("Served")
def served(doc, event):
    return {"n": doc.get("n", 0) + 1}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_token_prints_a_token_once_and_the_line_a_server_keeps() -> None:
    result = CliRunner().invoke(cli, ["token", "admin", "--json"])
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    assert made["role"] == "admin"
    assert made["token"] not in made["line"]
    tokens = Tokens.from_lines([made["line"]])
    found = tokens.role_of(made["token"])
    assert found is not None
    assert found[0] == "admin"
    assert tokens.role_of(made["token"] + "x") is None


def test_serve_refuses_a_bad_tokens_file(tmp_path: Path) -> None:
    bad = tmp_path / "tokens"
    bad.write_text("write my-plain-token\n")
    result = CliRunner().invoke(
        cli, ["--url", f"sqlite:///{tmp_path / 'x.db'}", "serve", "--tokens", str(bad)]
    )
    assert result.exit_code == 4
    assert "line 1" in result.stderr
    assert "hash_token" in result.stderr


@pytest.mark.parametrize(("access_log", "privacy"), [(False, True), (True, False)])
def test_serve_runs_the_api_with_the_app_projections_and_tokens(
    tmp_path: Path, access_log: bool, privacy: bool
) -> None:
    (tmp_path / "served_app.py").write_text(textwrap.dedent(APP))
    made = json.loads(CliRunner().invoke(cli, ["token", "write", "--json"]).stdout)
    admin = json.loads(CliRunner().invoke(cli, ["token", "admin", "--json"]).stdout)
    (tmp_path / "tokens").write_text(f"# the writers\n{made['line']}\n{admin['line']}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "EVENTFOLD_URL"}
    command = [
        sys.executable, "-c", "from eventfold.cli import main; main()",
        "--url", f"sqlite:///{tmp_path / 's.db'}", "serve",
        "--app", "served_app", "--port", str(port), "--tokens", "tokens",
    ]  # fmt: skip
    if access_log:
        command.append("--access-log")
    if privacy:
        command.append("--privacy")
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.communicate()
            try:
                if httpx.get(f"{base}/openapi.json").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "eventfold serve did not start"
            time.sleep(0.05)
        body = {"events": [{"type": "Served", "data": {"n": 1}}]}
        refused = httpx.post(f"{base}/streams/s-1/events", json=body, headers={"If-Match": "*"})
        assert refused.status_code == 401
        appended = httpx.post(
            f"{base}/streams/s-1/events",
            json=body,
            headers={"If-Match": 'W/"0"', "Authorization": f"Bearer {made['token']}"},
        )
        assert appended.status_code == 201, appended.text
        assert httpx.get(f"{base}/streams/s-1/events").json()["version"] == 1
        (status,) = httpx.get(f"{base}/projections").json()
        assert (status["name"], status["lag_events"]) == ("counts", 1)
        forgot = httpx.post(
            f"{base}/privacy/forget",
            json={"subject": "c-1", "reason": "asked"},
            headers={"Authorization": f"Bearer {admin['token']}"},
        )
        # Only a server started with --privacy can forget subjects.
        assert forgot.status_code == (200 if privacy else 409), forgot.text
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert b"1 projection(s), 2 token(s)" in err
    # uvicorn's access log: a line per request only when asked for.
    logged = b'"POST /streams/s-1/events HTTP/1.1" 201' in out + err
    assert logged is access_log, (out, err)
