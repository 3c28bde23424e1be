"""Mixed commands from many client threads over HTTP, each retried with its Idempotency-Key.

Every command a client sends carries a fresh Idempotency-Key. A transient failure (a 503, a
409 "still in flight", a dropped connection) is retried with the same key, so the command
lands at most once; a 2xx is an acknowledged command. The load records what was
acknowledged, so a test can check afterwards that each one is in the log exactly once.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
import psycopg

from api.commanding import IDEMPOTENCY_NAMESPACE

RETRYABLE = {503, 409}  # 409 only when the key's first request is still in flight


@dataclass
class Ack:
    idempotency_key: str
    command_id: str
    method: str
    path: str
    stream_id: str
    version: int
    position: int | None  # None: the command changed nothing (e.g. a tag already there)
    appended: int
    duplicate: bool = False  # a retry whose first attempt had committed (its answer was lost)


@dataclass
class LoadReport:
    acks: list[Ack] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    unavailable: list[httpx.Response] = field(default_factory=list)  # 503s, for their headers
    server_errors: list[str] = field(default_factory=list)  # any 5xx other than a clean 503
    transport_errors: int = 0
    abandoned: int = 0  # commands given up after their retries (neither acked nor known lost)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, status: int) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1


def command_id(token: str, idempotency_key: str) -> str:
    key_id = token.split("_")[1]
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{key_id}:{idempotency_key}"))


class Load:
    """`clients` threads sending mixed commands to `base` until stopped."""

    def __init__(self, base: str, token: str, clients: int = 8, *, retries: int = 60, seed: int = 0) -> None:
        self.base, self.token, self.clients, self.retries = base, token, clients, retries
        self.report = LoadReport()
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.seed = seed
        # Streams created so far, shared by the clients (so they also contend on the same streams).
        self.documents: list[str] = []
        self.agents: list[str] = []
        self.chains: list[str] = []

    def start(self) -> "Load":
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, args=(n,), name=f"load-{n}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self, timeout: float = 120) -> LoadReport:
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "load clients did not stop"
        return self.report

    # -- one client ----------------------------------------------------------------------------

    def _client(self, n: int) -> None:
        rng = random.Random(self.seed * 1000 + n)
        with httpx.Client(base_url=self.base, timeout=20,
                          headers={"Authorization": f"Bearer {self.token}"}) as client:
            while not self.stop_event.is_set():
                method, path, body = self._pick(rng, n)
                self._send(client, method, path, body)

    def _pick(self, rng: random.Random, n: int) -> tuple[str, str, dict]:
        roll = rng.random()
        if roll < 0.25 or not self.documents:
            return "POST", "/v1/documents", {
                "namespace": f"soak{n % 3}", "type": rng.choice(["session_context", "user_feedback"]),
                "title": f"doc {rng.randrange(10**6)}", "content": "x" * rng.randrange(1, 200),
                "metadata": {"client": n}}
        if roll < 0.45:
            return "PATCH", f"/v1/documents/{rng.choice(self.documents)}", {
                "content": f"edit {rng.randrange(10**6)}", "change_description": "soak"}
        if roll < 0.52:
            return "PUT", f"/v1/documents/{rng.choice(self.documents)}/tags/{rng.choice(['staging', 'production'])}", {
                "version": 1}
        if roll < 0.57:
            return "POST", f"/v1/documents/{rng.choice(self.documents)}/{rng.choice(['undo', 'redo'])}", {}
        if roll < 0.67 or not self.agents:
            return "POST", "/v1/agents", {"name": f"agent {n}", "prompt": "p", "model": "m", "tools": ["t"]}
        if roll < 0.80:
            return "POST", f"/v1/agents/{rng.choice(self.agents)}/executions", {
                "input": {"q": rng.randrange(100)}, "output": "ok", "duration_ms": rng.randrange(1000),
                "tokens": rng.randrange(5000)}
        if roll < 0.88 or not self.chains:
            return "POST", "/v1/chains", {"name": f"chain {n}", "description": "soak"}
        chain = rng.choice(self.chains)
        node = f"n{rng.randrange(5)}"
        return "POST", f"/v1/chains/{chain}/nodes", {"node_id": node, "kind": "document",
                                                      "ref_id": rng.choice(self.documents)}

    def _send(self, client: httpx.Client, method: str, path: str, body: dict) -> None:
        key = str(uuid.uuid4())
        report = self.report
        for attempt in range(self.retries):
            if attempt and self.stop_event.is_set() and attempt > 20:
                break
            try:
                response = client.request(method, path, json=body, headers={"Idempotency-Key": key})
            except httpx.HTTPError:
                with report.lock:
                    report.transport_errors += 1
                time.sleep(0.2)
                continue
            status = response.status_code
            report.count(status)
            if status >= 500:
                if status == 503 and response.headers.get("retry-after") and \
                        response.headers.get("content-type", "").startswith("application/problem+json"):
                    with report.lock:
                        if len(report.unavailable) < 50:
                            report.unavailable.append(response)
                    time.sleep(min(float(response.headers["retry-after"]), 0.5))
                    continue
                with report.lock:
                    report.server_errors.append(f"{method} {path} -> {status}: {response.text[:500]}")
                time.sleep(0.2)
                continue
            if status == 409 and response.json().get("code") == "idempotency_key_in_flight":
                time.sleep(0.2)
                continue
            if 200 <= status < 300:
                data = response.json()
                ack = Ack(key, command_id(self.token, key), method, path, data["stream_id"], data["stream_version"],
                          data["position"], int(data.get("appended") or 0), bool(data.get("duplicate")))
                with report.lock:
                    report.acks.append(ack)
                if method == "POST" and path in ("/v1/documents", "/v1/agents", "/v1/chains"):
                    getattr(self, path.rsplit("/", 1)[1]).append(data["stream_id"])
            return  # acknowledged, or refused for good (a conflict, a rule): done either way
        with report.lock:
            report.abandoned += 1


# -- checks on the log afterwards ----------------------------------------------------------------

def assert_acknowledged_exactly_once(url: str, acks: list[Ack]) -> None:
    """Each acknowledged command's events are in the log, from one append only."""
    assert acks, "no command was acknowledged"
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT metadata->>'command_id', array_agg(stream_id ORDER BY position),"
            " array_agg(version ORDER BY position), array_agg(position ORDER BY position)"
            " FROM events WHERE metadata->>'command_id' = ANY(%s) GROUP BY 1",
            ([a.command_id for a in acks],),
        ).fetchall()
    found = {r[0]: r[1:] for r in rows}
    problems = []
    for ack in acks:
        if not ack.appended and not ack.duplicate:
            if ack.command_id in found:
                problems.append(f"a no-op command appended: {ack} -> {found[ack.command_id]}")
            continue
        if ack.command_id not in found:
            if ack.duplicate and ack.position is None:
                continue  # a retry of a command that changed nothing
            problems.append(f"lost: {ack}")
            continue
        streams, versions, positions = found[ack.command_id]
        if set(streams) != {ack.stream_id} or (ack.position is not None and ack.position not in positions) \
                or (not ack.duplicate and max(versions) != ack.version):
            problems.append(f"mismatch: {ack} vs {streams} {versions} {positions}")
        elif versions != list(range(versions[0], versions[0] + len(versions))):
            problems.append(f"appended more than once: {ack} -> versions {versions}")
        elif not ack.duplicate and len(versions) != ack.appended:
            problems.append(f"{ack.appended} events acknowledged, {len(versions)} in the log: {ack}")
    assert not problems, "\n".join(problems[:20])
    assert len({a.command_id for a in acks}) == len(acks)


def assert_streams_contiguous(url: str) -> int:
    """Every stream's versions are 1..N with no gap or repeat, and N is the stream's version."""
    with psycopg.connect(url) as conn:
        bad = conn.execute(
            "SELECT e.stream_id, count(*), min(e.version), max(e.version), count(DISTINCT e.version), s.version"
            " FROM events e LEFT JOIN streams s USING (stream_id) GROUP BY e.stream_id, s.version"
            " HAVING min(e.version) <> 1 OR max(e.version) <> count(*) OR count(DISTINCT e.version) <> count(*)"
            "     OR s.version IS DISTINCT FROM max(e.version)"
        ).fetchall()
        streams = conn.execute("SELECT count(DISTINCT stream_id) FROM events").fetchone()[0]
    assert not bad, f"streams with gaps or repeats: {bad[:10]}"
    return streams
