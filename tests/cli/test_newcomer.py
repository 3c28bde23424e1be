"""A newcomer's path: `chronicle up` on a fresh data folder, no DATABASE_URL, no REDIS_URL.

It starts an embedded PostgreSQL and in-process workers, prints an admin key, takes
commands, serves them back from the snapshot tables, stops cleanly on Ctrl-C, and finds
everything again on the next start.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from pathlib import Path

import httpx

from tests.api.conftest import chronicle_env, free_port
from tests.cli.conftest import CHRONICLE
from tests.support import wait_ready


class Up:
    """A running `chronicle up` whose output is collected line by line."""

    def __init__(self, folder: Path, port: int) -> None:
        env = chronicle_env(CHRONICLE_DATA_DIR=str(folder / "data"), PYTHONUNBUFFERED="1", COLUMNS="300")
        self.proc = subprocess.Popen([CHRONICLE, "up", "--port", str(port)], cwd=folder, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.base = f"http://127.0.0.1:{port}"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 90) -> None:
        wait_ready(self.base, self.proc, timeout, output=lambda: self.output)

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=30)
            self.reader.join(5)
            return code
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"did not stop on Ctrl-C:\n{self.output}") from None


def test_chronicle_up_from_nothing(tmp_path: Path):
    port = free_port()
    first = Up(tmp_path, port)
    try:
        first.wait_ready()
        token = re.search(r"CHRONICLE_KEY=(chr_\S+)", first.output).group(1)
        assert f"curl -s -X POST http://127.0.0.1:{port}/v1/documents" in first.output
        auth = {"Authorization": f"Bearer {token}"}
        created = httpx.post(f"{first.base}/v1/documents", headers=auth, json={
            "namespace": "demo", "type": "session_context", "title": "Hello", "content": "first"})
        assert created.status_code == 201, created.text
        doc, position = created.json()["stream_id"], created.json()["position"]
        got = httpx.get(f"{first.base}/v1/documents/{doc}", headers=auth, params={"min_position": position})
        assert got.status_code == 200 and got.json()["content"] == "first"
        listed = httpx.get(f"{first.base}/v1/documents", headers=auth, params={"namespace": "demo"}).json()
        assert [d["document_id"] for d in listed["documents"]] == [doc]
    finally:
        code = first.interrupt()
    assert code == 0, first.output
    assert "Chronicle stopped." in first.output and "Traceback" not in first.output, first.output

    second = Up(tmp_path, port)
    try:
        second.wait_ready()
        assert "CHRONICLE_KEY=" not in second.output and "Admin key exists" in second.output
        updated = httpx.patch(f"{second.base}/v1/documents/{doc}", headers={**auth, "If-Match": '"1"'},
                              json={"content": "second"})
        assert updated.status_code == 200, updated.text
        got = httpx.get(f"{second.base}/v1/documents/{doc}", headers=auth,
                        params={"min_position": updated.json()["position"]})
        assert got.json()["content"] == "second" and got.headers["etag"] == '"2"'
    finally:
        assert second.interrupt() == 0, second.output
