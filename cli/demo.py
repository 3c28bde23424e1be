"""`chronicle demo`: build a small sample workspace through the public HTTP API, and show it.

Everything goes through the API a service would use (httpx, `Authorization: Bearer`):
commands carry `Idempotency-Key` and `If-Match` (the ETag of the previous response), and
reads pass `?min_position=` so they see the command that came just before them. It shows
a chain of documents and agents joined by edges, a document tagged staging then
production, an undo and a redo, the state as of an earlier time, and the audit trail.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.tree import Tree

DEFAULT_URL = "http://127.0.0.1:8000"
NO_KEY_HELP = (
    "chronicle demo needs an API key that may write: admin (which also shows the audit trail) or writer.\n"
    "  - The first `chronicle up` (or `make run`) printed an admin key: CHRONICLE_KEY=chr_...\n"
    "    Pass it with --key, or export CHRONICLE_KEY=chr_... before running the demo.\n"
    "  - Or create one on the same database: chronicle keys create demo --role admin"
)


class DemoError(Exception):
    """A failure the demo explains in a sentence (no traceback)."""


class Api:
    """A thin client: Chronicle's headers on every call, problem+json turned into DemoError."""

    def __init__(self, url: str, key: str, session_id: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.session_id = session_id
        self.client = httpx.Client(
            base_url=self.url, timeout=timeout,
            headers={"Authorization": f"Bearer {key}", "User-Agent": "chronicle-demo"},
        )
        self.run_id = uuid.uuid4().hex[:12]
        self.last_position = 0

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None, allow: tuple[int, ...] = ()) -> httpx.Response:
        try:
            response = self.client.request(method, path, json=json_body, params=params, headers=headers)
        except httpx.ConnectError:
            raise DemoError(
                f"Cannot reach Chronicle at {self.url}.\n"
                "Start it in another terminal with `make run` (or `chronicle up`), or point the demo at a running "
                "server with --url."
            ) from None
        except httpx.TimeoutException:
            raise DemoError(f"Chronicle at {self.url} did not answer {method} {path} in time.") from None
        except httpx.HTTPError as exc:
            raise DemoError(f"{method} {path} failed: {exc}") from None
        if response.status_code < 400 or response.status_code in allow:
            return response
        raise DemoError(self._explain(method, path, response))

    def _explain(self, method: str, path: str, response: httpx.Response) -> str:
        try:
            problem = response.json()
        except ValueError:
            problem = {}
        if not isinstance(problem, dict):
            problem = {}
        detail = problem.get("detail") or response.text[:200] or response.reason_phrase
        status = response.status_code
        if status == 401:
            return f"Chronicle refused the API key (401: {detail}).\n{NO_KEY_HELP}"
        if status == 403:
            return (f"This key's role may not {method} {path} (403: {detail}).\n"
                    "Use a writer key to build the workspace, or an admin key to see everything.")
        if status == 404 and not problem:
            return f"{self.url} does not look like a Chronicle API ({method} {path} gave 404)."
        if status == 503 and problem.get("code") == "projection_behind":
            return (f"The read side did not catch up ({detail}).\n"
                    "Are the workers running? `chronicle up` runs them; with REDIS_URL start `chronicle worker`.")
        code = problem.get("code")
        return f"{method} {path} failed with {status}" + (f" {code}" if code else "") + f": {detail}"

    def command(self, method: str, path: str, body: Any = None, *, step: str, etag: str | None = None,
                allow: tuple[int, ...] = ()) -> httpx.Response:
        """A command: its session, an Idempotency-Key for its step, and If-Match when we know the version."""
        headers = {"X-Session-Id": self.session_id, "Idempotency-Key": f"demo-{self.run_id}-{step}"}
        if etag:
            headers["If-Match"] = etag
        for _ in range(10):
            response = self.request(method, path, json_body=body, headers=headers, allow=(*allow, 409))
            if response.status_code != 409 or response.json().get("code") != "idempotency_key_in_flight":
                break
            # The first request with this key has not finished being recorded: wait as told, then ask again.
            time.sleep(min(float(response.headers.get("retry-after") or 1), 5))
        if response.status_code == 409 and 409 not in allow:
            raise DemoError(self._explain(method, path, response))
        position = response.headers.get("x-chronicle-position")
        if position:
            self.last_position = max(self.last_position, int(position))
        return response

    def read(self, path: str, **params: Any) -> Any:
        """A read that waits (bounded, server-side) until the read side has our latest write."""
        params = {k: v for k, v in params.items() if v is not None}
        if self.last_position:
            params.setdefault("min_position", self.last_position)
        return self.request("GET", path, params=params).json()


def _stream(response: httpx.Response) -> str:
    return response.json()["stream_id"]


def _short(stream_id: str) -> str:
    return stream_id[:8]


class Demo:
    def __init__(self, api: Api, console: Console) -> None:
        self.api = api
        self.console = console
        self.names: dict[str, str] = {}
        self.built: dict[str, Any] = {"session_id": api.session_id}

    def say(self, text: str) -> None:
        self.console.print(text)

    def heading(self, number: int, title: str) -> None:
        self.console.print()
        self.console.rule(f"[bold cyan]{number}. {title}[/bold cyan]", align="left")

    def check_server(self) -> None:
        health = self.api.request("GET", "/healthz", allow=(404, 503))
        if health.status_code == 404:
            raise DemoError(f"{self.api.url} does not look like a Chronicle API (no /healthz).")
        # The cheapest command-free call that proves the key: a one-row read.
        self.api.request("GET", "/v1/documents", params={"limit": 1})

    # -- 1. a chain of documents and agents ----------------------------------------------------

    def build_chain(self) -> None:
        self.heading(1, "A chain of documents and agents, joined by edges")
        api = self.api
        run = api.run_id[:6]
        planner_body = {"name": "Planner", "prompt": "Turn a brief into a release plan.", "model": "gpt-4o",
                        "tools": ["search"], "metadata": {"demo": run}}
        planner = api.command("POST", "/v1/agents", planner_body, step="agent-planner")
        retried = api.command("POST", "/v1/agents", planner_body, step="agent-planner")
        self.say(f"POST /v1/agents     Planner (agent)            -> 201, id {_short(_stream(planner))}, "
                 f"ETag {planner.headers['etag']}, X-Chronicle-Position {planner.headers.get('x-chronicle-position')}")
        self.say(f"  sent again with the same Idempotency-Key -> {retried.status_code}, same id "
                 f"{_short(_stream(retried))}, Idempotent-Replayed: {retried.headers.get('idempotent-replayed')}"
                 " (nothing appended)")
        reviewer = api.command("POST", "/v1/agents", {
            "name": "Reviewer", "prompt": "Check release notes for accuracy.", "model": "gpt-4o-mini",
            "metadata": {"demo": run}}, step="agent-reviewer")
        brief = api.command("POST", "/v1/documents", {
            "namespace": "demo", "type": "brief", "title": "Launch brief",
            "content": "Ship the new canvas on Friday.", "metadata": {"demo": run}}, step="doc-brief")
        notes = api.command("POST", "/v1/documents", {
            "namespace": "demo", "type": "release_notes", "title": "Release notes",
            "content": "Draft 1: new canvas.", "metadata": {"demo": run}}, step="doc-notes")
        ids = {"planner": _stream(planner), "reviewer": _stream(reviewer), "brief": _stream(brief),
               "notes": _stream(notes)}
        self.names.update({ids["planner"]: "Planner (agent)", ids["reviewer"]: "Reviewer (agent)",
                           ids["brief"]: "Launch brief (document)", ids["notes"]: "Release notes (document)"})
        for label in ("reviewer", "brief", "notes"):
            route = "/v1/agents   " if label == "reviewer" else "/v1/documents"
            self.say(f"POST {route}  {self.names[ids[label]]:<26} -> 201, id {_short(ids[label])}")

        chain = api.command("POST", "/v1/chains", {"name": "Release pipeline",
                                                    "description": "brief -> planner -> notes -> reviewer",
                                                    "metadata": {"demo": run}}, step="chain")
        chain_id = _stream(chain)
        self.names[chain_id] = "Release pipeline (chain)"
        etag = chain.headers["etag"]
        nodes = [("brief", "document", 0), ("planner", "agent", 1), ("notes", "document", 2),
                 ("reviewer", "agent", 3)]
        for node_id, kind, x in nodes:
            added = api.command("POST", f"/v1/chains/{chain_id}/nodes",
                                {"node_id": node_id, "kind": kind, "ref_id": ids[node_id],
                                 "position": {"x": 240 * x, "y": 0}}, step=f"node-{node_id}", etag=etag)
            etag = added.headers["etag"]
        edges = [("brief", "planner", "input"), ("planner", "notes", "writes"), ("notes", "reviewer", "reviewed_by")]
        for source, target, kind in edges:
            made = api.command("POST", f"/v1/chains/{chain_id}/edges",
                               {"edge_id": f"{source}-{target}", "source_id": source, "target_id": target,
                                "type": kind}, step=f"edge-{source}-{target}", etag=etag)
            etag = made.headers["etag"]
        self.say(f"POST /v1/chains + 4 nodes + 3 edges, each with If-Match: the previous ETag -> chain at {etag}")

        got = api.read(f"/v1/chains/{chain_id}")
        tree = Tree(f"[bold]{got['name']}[/bold]  chain {_short(chain_id)}, version {got['stream_version']}")
        nodes_by_id = got.get("nodes") or {}
        order = {f"{s}-{t}": i for i, (s, t, _) in enumerate(edges)}
        for edge in sorted(got["edges"], key=lambda e: order.get(e["edge_id"], len(order))):
            source = nodes_by_id.get(edge["source_id"], {})
            target = nodes_by_id.get(edge["target_id"], {})
            tree.add(f"{self._node_label(edge['source_id'], source)} [magenta]--{edge['type']}-->[/magenta] "
                     f"{self._node_label(edge['target_id'], target)}")
        self.say(f"GET /v1/chains/{_short(chain_id)}...?min_position={api.last_position} (read your writes):")
        self.console.print(tree)
        self.built.update(chain_id=chain_id, agents=[ids["planner"], ids["reviewer"]],
                          documents=[ids["brief"], ids["notes"]], edges=[e["edge_id"] for e in got["edges"]])
        self.notes_id = ids["notes"]

    def _node_label(self, node_id: str, node: dict[str, Any]) -> str:
        ref = node.get("ref_id")
        name = self.names.get(ref, node.get("kind", "?")) if ref else node_id
        return f"[green]{name}[/green]"

    # -- 2. tags: staging, then production -------------------------------------------------------

    def tag_document(self) -> None:
        self.heading(2, "A document tagged staging, then production")
        api, doc = self.api, self.notes_id
        current = api.read(f"/v1/documents/{doc}")
        updated = api.command("PATCH", f"/v1/documents/{doc}", {
            "content": "Draft 2: new canvas, faster search.", "change_description": "add search"},
            step="notes-v2", etag=f'"{current["stream_version"]}"')
        self.say(f"PATCH /v1/documents/{_short(doc)}... (If-Match) -> document version 2, ETag {updated.headers['etag']}")
        staged = api.command("PUT", f"/v1/documents/{doc}/tags/staging", {"version": 2}, step="tag-staging")
        self.say(f"PUT .../tags/staging  {{\"version\": 2}} -> stream version {staged.json()['stream_version']}")
        # The moment between the two tags: time travel comes back here in step 4.
        history = api.read(f"/v1/documents/{doc}/history")
        self.staging_time = history["versions"][-1]["timestamp"]
        promoted = api.command("PUT", f"/v1/documents/{doc}/tags/production", {"version": 2}, step="tag-production")
        self.say(f"PUT .../tags/production {{\"version\": 2}} -> stream version {promoted.json()['stream_version']}")
        tags = api.read(f"/v1/documents/{doc}/tags")
        table = Table(title="GET /v1/documents/{id}/tags: the tag history", title_justify="left")
        for column in ("when", "tag", "operation", "document version", "by"):
            table.add_column(column)
        for move in tags["history"]:
            table.add_row(move["created_at"][11:19], move["tag"], move["operation"], str(move["document_version"]),
                          f"{move.get('created_by_type') or ''}:{move.get('created_by') or ''}")
        self.console.print(table)
        production = api.read("/v1/documents", tag="production", namespace="demo")
        mine = [d for d in production["documents"] if d["document_id"] == doc]
        if mine:
            self.say(f"GET /v1/documents?tag=production -> \"{mine[0]['title']}\" at version {mine[0]['document_version']}: "
                     f"{mine[0]['content']!r}")

    # -- 3. undo and redo ------------------------------------------------------------------------

    def undo_redo(self) -> None:
        self.heading(3, "An undo and a redo")
        api, doc = self.api, self.notes_id
        edit = api.command("PATCH", f"/v1/documents/{doc}", {
            "content": "Draft 3: new canvas, faster search, and a typo tpyo.", "change_description": "late edit"},
            step="notes-v3")
        self.say(f"PATCH  a late edit          -> {self._content(doc)!r}  (ETag {edit.headers['etag']})")
        undone = api.command("POST", f"/v1/documents/{doc}/undo", step="undo", etag=edit.headers["etag"])
        self.say(f"POST .../undo  (If-Match {edit.headers['etag']}) -> {self._content(doc)!r}  "
                 f"(ETag {undone.headers['etag']}: a new event)")
        redone = api.command("POST", f"/v1/documents/{doc}/redo", step="redo", etag=undone.headers["etag"])
        self.say(f"POST .../redo  (If-Match {undone.headers['etag']}) -> {self._content(doc)!r}  "
                 f"(ETag {redone.headers['etag']})")

    def _content(self, doc: str) -> str:
        return self.api.read(f"/v1/documents/{doc}")["content"]

    # -- 4. time travel --------------------------------------------------------------------------

    def time_travel(self) -> None:
        self.heading(4, "The state as of an earlier time")
        api, doc = self.api, self.notes_id
        then = api.read(f"/v1/documents/{doc}/history", as_of=self.staging_time)
        now = api.read(f"/v1/documents/{doc}")
        table = Table(title=f"GET /v1/documents/{{id}}/history?as_of={self.staging_time}", title_justify="left")
        table.add_column("")
        table.add_column(f"as of {self.staging_time[11:23]} (stream version {then['stream_version']})")
        table.add_column(f"now (stream version {then['current_stream_version']})")
        state = then["state"]
        table.add_row("content", str(state.get("content")), str(now["content"]))
        table.add_row("document version", str(state.get("version")), str(now["document_version"]))
        table.add_row("tags", json.dumps(state.get("tags") or {}), json.dumps(now.get("tags") or {}))
        self.console.print(table)
        self.built["as_of"] = self.staging_time

    # -- 5. the audit trail ----------------------------------------------------------------------

    def audit(self) -> None:
        self.heading(5, "The audit trail: who did what")
        api = self.api
        params: dict[str, Any] = {"session": api.session_id, "limit": 100, "min_position": api.last_position}
        events: list[dict[str, Any]] = []
        while True:
            response = api.request("GET", "/v1/events", params=params, allow=(403,))
            if response.status_code == 403:
                self.say("[yellow]This key may not read the event log (it needs the auditor or admin role).\n"
                         "See it with an auditor key: GET /v1/events?session=" + api.session_id + "[/yellow]")
                return
            page = response.json()
            events += page["events"]
            if not page.get("next_cursor"):
                break
            params["cursor"] = page["next_cursor"]
        table = Table(title=f"GET /v1/events?session={api.session_id}", title_justify="left")
        for column in ("position", "recorded at", "actor", "event", "stream", "version"):
            table.add_column(column, overflow="fold")
        for event in events:
            meta = event.get("metadata") or {}
            table.add_row(str(event["position"]), event["recorded_at"][11:23],
                          f"{meta.get('actor_type', '?')}:{meta.get('actor_id', '?')}", event["type"],
                          self.names.get(event["stream_id"], _short(event["stream_id"])), str(event["stream_version"]))
        self.console.print(table)
        self.built["events"] = len(events)

    def finish(self) -> None:
        chain, doc = self.built["chain_id"], self.notes_id
        self.console.print()
        self.console.rule("[bold green]Demo workspace built[/bold green]", align="left")
        self.console.print(f"Session {self.api.session_id} (every command above carries it as X-Session-Id)")
        self.console.print(f"Chain {chain}, release notes {doc}. Look again:", soft_wrap=True)
        self.console.print(f'  curl -s {self.api.url}/v1/chains/{chain} -H "Authorization: Bearer $CHRONICLE_KEY"',
                           soft_wrap=True)
        self.console.print(f"  chronicle history {doc}", soft_wrap=True)


def demo(
    url: str = typer.Option(DEFAULT_URL, "--url", envvar="CHRONICLE_URL", help="Where Chronicle's API runs."),
    key: str | None = typer.Option(None, "--key", envvar="CHRONICLE_KEY",
                                   help="An API key that may write (admin also shows the audit trail)."),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print the ids of what was built as JSON on stdout (the story goes to stderr)."),
) -> None:
    """Build a sample workspace through the HTTP API and show it: a chain with edges, tags
    staging then production, undo and redo, time travel, and the audit trail.

    httpx's request lines show only with `chronicle --verbose demo`."""
    console = Console(highlight=False, stderr=as_json)  # with --json, stdout carries only the JSON
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if not key:
        err.print(f"[red]No API key.[/red] {NO_KEY_HELP}")
        raise typer.Exit(2)
    if not url.startswith(("http://", "https://")):
        err.print(f"[red]error:[/red] --url must be an http:// or https:// address, not {url!r}")
        raise typer.Exit(2)
    api = Api(url, key.strip(), session_id=f"demo-{uuid.uuid4().hex[:10]}")
    runner = Demo(api, console)
    try:
        console.print(Panel.fit(f"Building a sample workspace on [bold]{api.url}[/bold] through the public API\n"
                                f"session {api.session_id}", title="chronicle demo"))
        runner.check_server()
        runner.build_chain()
        runner.tag_document()
        runner.undo_redo()
        runner.time_travel()
        runner.audit()
        runner.finish()
    except DemoError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        api.close()
    if as_json:
        typer.echo(json.dumps(runner.built))
