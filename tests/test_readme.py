"""The README's two commands stay honest: CI runs the test command, and the run command,
executed as written in a fresh copy of the project, builds the graph and serves it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from project import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def fenced_commands() -> list[str]:
    """The one-line shell commands in the README's ```sh blocks, in order."""
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", README, flags=re.S)]


def test_readme_has_exactly_two_commands_run_then_test() -> None:
    run, test = fenced_commands()[:2]
    assert "sasci-kg serve" in run
    assert "pytest" in test


def test_ci_runs_the_readme_test_command() -> None:
    test = fenced_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test in ci.splitlines(), ".ci/run must call the README's test command verbatim"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_run_command_builds_and_serves_in_a_fresh_copy(tmp_path: Path) -> None:
    copy = tmp_path / "clone"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        ".venv", ".git", ".sasci-kg", "build", "__pycache__", "*.egg-info", ".pytest_cache",
        "benchmarks"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SASCI_KG_")}
    env["SASCI_KG_PORT"] = str(port)
    process = subprocess.Popen(
        ["bash", "-c", fenced_commands()[0]], cwd=copy, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not come up in 5 minutes"
                time.sleep(1)
        query = urllib.parse.urlencode({"query": "ASK { project:sasci schema:funder ?f }"})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/sparql?{query}",
                                         headers={"Accept": "application/sparql-results+json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response) == {"head": {}, "boolean": True}
        assert (copy / ".sasci-kg" / "store" / "CURRENT").exists()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout:
            process.stdout.close()
