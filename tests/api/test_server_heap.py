"""A server process settles its heap once started: startup objects frozen, young collections rarer.

Checked in the processes the entry points start (`chronicle up`, and `chronicle serve` on several
processes, whose apps come from create_app_from_env), not by calling settle_heap() here: a probe
loaded at each interpreter's start (sitecustomize on PYTHONPATH) writes its process's collector
settings to a file a few times a second.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from api.app import GC_YOUNG_THRESHOLD
from tests.api.conftest import (
    CHRONICLE,
    ROOT,
    chronicle_env,
    free_port,
    running_chronicle,
)
from tests.support import stop, wait_ready

PROBE = '''
import gc, json, os, threading, time

def _report(folder):
    path = os.path.join(folder, f"{os.getpid()}.json")
    while True:
        with open(path + ".part", "w") as out:
            json.dump({"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}, out)
        os.replace(path + ".part", path)
        time.sleep(0.1)

if os.environ.get("HEAP_PROBE_DIR"):
    threading.Thread(target=_report, args=(os.environ["HEAP_PROBE_DIR"],), daemon=True).start()
'''


def _probed_env(tmp_path: Path, url: str) -> tuple[dict[str, str], Path]:
    """The environment of a server whose every Python process reports its collector to a folder."""
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "sitecustomize.py").write_text(PROBE)
    reports = tmp_path / "reports"
    reports.mkdir()
    env = chronicle_env(DATABASE_URL=url, PYTHONPATH=str(tmp_path / "probe"), HEAP_PROBE_DIR=str(reports),
                        CHRONICLE_DATA_DIR=str(tmp_path / "data"))
    return env, reports


def _settled(reports: Path) -> dict[int, bool]:
    """Each reporting process: whether its heap is settled (startup frozen, young threshold raised)."""
    time.sleep(0.5)  # a report or two after the server answered
    found = {int(f.stem): json.loads(f.read_text()) for f in reports.glob("*.json")}
    return {pid: r["threshold"][0] == GC_YOUNG_THRESHOLD and r["frozen"] > 1000 for pid, r in found.items()}


def test_chronicle_up_serves_from_a_settled_heap(fresh_database_url: str, tmp_path: Path) -> None:
    env, reports = _probed_env(tmp_path, fresh_database_url)
    with running_chronicle(env, tmp_path / "up.log", free_port()):
        settled = _settled(reports)
    assert list(settled.values()).count(True) == 1, settled  # the one process: API and workers


def test_each_process_of_chronicle_serve_settles_its_heap(fresh_database_url: str, tmp_path: Path) -> None:
    env, reports = _probed_env(tmp_path, fresh_database_url)
    port = free_port()
    env.update(CHRONICLE_API_PROCESSES="2")
    with open(tmp_path / "serve.log", "wb") as out:
        proc = subprocess.Popen([CHRONICLE, "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, output=(tmp_path / "serve.log").read_text)
        deadline = time.monotonic() + 30
        while list((settled := _settled(reports)).values()).count(True) < 2 and time.monotonic() < deadline:
            pass  # the second process may still be starting
    finally:
        stop(proc)
    assert settled.get(proc.pid) is False  # the supervisor serves nothing
    assert list(settled.values()).count(True) == 2, settled
