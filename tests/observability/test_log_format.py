"""CHRONICLE_LOG_FORMAT: `auto` (the default) writes JSON lines unless stderr is a terminal,
where it writes aligned text; `console` and `json` force one or the other."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (
    "import structlog; from infrastructure.logs import configure_logging; configure_logging(); "
    "structlog.get_logger('chronicle.test').info('hello', answer=42)"
)


def _log_line(log_format: str | None, terminal: bool) -> str:
    """The line one info log writes to stderr, a pipe or a pseudo-terminal."""
    env = {k: v for k, v in os.environ.items() if k != "CHRONICLE_LOG_FORMAT"}
    if log_format is not None:
        env["CHRONICLE_LOG_FORMAT"] = log_format
    if not terminal:
        done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60, check=True)
        return done.stderr.strip()
    leader, follower = pty.openpty()
    try:
        subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, stderr=follower, timeout=60, check=True)
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode().strip()
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)


@pytest.mark.parametrize("log_format", [None, "auto", "json"])
def test_a_pipe_gets_json_lines_by_default_and_when_asked(log_format):
    line = json.loads(_log_line(log_format, terminal=False))
    assert line["event"] == "hello" and line["answer"] == 42 and line["level"] == "info"
    assert line["logger"] == "chronicle.test" and "timestamp" in line


@pytest.mark.parametrize("log_format", [None, "auto", "console"])
def test_a_terminal_gets_aligned_text_by_default_and_when_asked(log_format):
    line = _log_line(log_format, terminal=True)
    assert "hello" in line and "answer" in line and "42" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_console_is_text_even_in_a_pipe_and_json_is_json_on_a_terminal():
    with pytest.raises(json.JSONDecodeError):
        json.loads(_log_line("console", terminal=False))
    assert json.loads(_log_line("json", terminal=True))["event"] == "hello"


def test_an_unknown_format_is_refused_by_name():
    env = {**os.environ, "CHRONICLE_LOG_FORMAT": "xml"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "chronicle_log_format" in done.stderr.lower()


def test_a_command_hands_its_resolved_format_to_the_processes_it_starts(tmp_path):
    # dramatiq's worker processes write to a pipe to `chronicle worker`: on a terminal they must
    # still write text, so the command settles `auto` before it starts them.
    script = ("import os; from cli.main import _configure_logs; _configure_logs(verbose=False); "
              "print(os.environ['CHRONICLE_LOG_FORMAT'], file=open(os.environ['OUT'], 'w'))")
    env = {k: v for k, v in os.environ.items() if k != "CHRONICLE_LOG_FORMAT"}
    env.update(CHRONICLE_DATA_DIR=str(tmp_path / "data"), OUT=str(tmp_path / "format"))
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=60, check=True)
    assert (tmp_path / "format").read_text().strip() == "json"
    leader, follower = pty.openpty()
    try:
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, stderr=follower, timeout=60, check=True)
    finally:
        os.close(leader)
        os.close(follower)
    assert (tmp_path / "format").read_text().strip() == "console"
