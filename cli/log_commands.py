"""The auditors' commands: `chronicle verify`, `chronicle seal`, `chronicle seal-key`, `chronicle verify-proof`.

`verify` recomputes the log's hashes, chains and seals; `seal` seals the log now (the workers'
tick does it every CHRONICLE_TICK_SECONDS); `verify-proof` checks an inclusion proof offline.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict
from pathlib import Path

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from cli.common import cli_pool, echo_json
from cli.output import err_console
from infrastructure.config import Settings, get_settings
from infrastructure.log_archive import ArchiveError
from infrastructure.log_verify import VerifyReport
from infrastructure.seals import SealKeyError, ensure_key_file, load_seal_key, new_key_text, public_bytes

# The file `chronicle up` keeps its seal key in, in the data folder, when none is configured.
SEAL_KEY_NAME = "seal.key"
# A log this long shows a progress bar while it is verified.
PROGRESS_FROM = 20_000


def seal_key_settings(settings: Settings, *, create: bool = False) -> Settings:
    """The settings with a seal key: the configured one, else the embedded store's in its data folder.

    With create, `chronicle up` makes that key file the first time.
    """
    if settings.chronicle_seal_key or settings.chronicle_seal_key_file or settings.database_url:
        return settings
    path = Path(settings.chronicle_data_dir).resolve() / SEAL_KEY_NAME
    if create:
        ensure_key_file(path)
    return settings.model_copy(update={"chronicle_seal_key_file": path}) if path.exists() else settings


def _public_keys(texts: list[str]) -> set[bytes]:
    """The raw keys of --public-key values (base64, or 64 hex digits)."""
    keys = set()
    for text in texts:
        try:
            raw = base64.b64decode(text, validate=True) if len(text) != 64 else bytes.fromhex(text)
        except (binascii.Error, ValueError):
            raise typer.BadParameter(f"{text!r} is not a base64 or hex public key", param_hint="--public-key") from None
        if len(raw) != 32:
            raise typer.BadParameter("an Ed25519 public key has 32 bytes", param_hint="--public-key")
        keys.add(raw)
    return keys


def _trusted_keys(settings: Settings, public_keys: list[str]) -> frozenset[bytes] | None:
    """The public keys a seal must be signed by: --public-key values and the configured key's; None if none."""
    keys = _public_keys(public_keys)
    try:
        key = load_seal_key(seal_key_settings(settings))
    except SealKeyError as exc:
        raise typer.BadParameter(str(exc)) from None
    if key is not None:
        keys.add(public_bytes(key))
    return frozenset(keys) if keys else None


def verify(
    from_position: int = typer.Option(0, "--from", min=0, help="Verify events after this position."),
    to_position: int | None = typer.Option(None, "--to", min=0, help="Verify events up to this position (default: the head)."),
    public_key: list[str] = typer.Option([], "--public-key", help="A trusted seal public key (base64 or hex); repeatable."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    archives: Path | None = typer.Option(None, "--archives", exists=True, file_okay=False,
                                         help="The folder of archived segments' files: verify their ranges too."),
) -> None:
    """Recompute every event hash, stream chain and seal; exit 1 at the first mismatch, naming its position.

    Archived ranges are skipped and named, or verified from their files with --archives."""
    settings = get_settings()
    trusted = _trusted_keys(settings, public_key)
    if trusted is None and not as_json:
        err_console.print("[yellow]No trusted seal key (--public-key or CHRONICLE_SEAL_KEY): each seal's"
                          " signature is checked against the key it names.[/yellow]")
    try:
        report = _verify(from_position, to_position, trusted, archives, as_json)
    except ArchiveError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        echo_json({**asdict(report), "ok": report.ok})
        if not report.ok:
            raise typer.Exit(1)
        return
    for skipped in report.skipped_archives:
        typer.echo(f"skipped: positions {skipped['first_position']}-{skipped['last_position']} are archived in"
                   f" {skipped['archive']} ({skipped['segment']}); --archives DIR verifies them from the files")
    if report.ok:
        typer.echo(f"ok: {report.events} events in positions {report.from_position + 1}-{report.to_position}"
                   f" and {report.seals} seals verify")
    else:
        first = report.mismatches[0]
        typer.echo(f"MISMATCH at position {first.position}: {first.what}")
        if len(report.mismatches) > 1:
            typer.echo(f"({len(report.mismatches) - 1} more mismatches after it; --json lists them all)")
    if not report.ok:
        raise typer.Exit(1)


def _verify(from_position: int, to_position: int | None, trusted: frozenset[bytes] | None, archives: Path | None,
            quiet: bool) -> VerifyReport:
    """verify_log over the application's pool, with a progress bar for a long log unless quiet."""
    from infrastructure.log_verify import log_head, verify_log

    with cli_pool() as pool, pool.connection() as conn:
        total = max(0, (to_position if to_position is not None else log_head(conn)) - from_position)
        if total < PROGRESS_FROM or quiet:
            report = verify_log(conn, from_position, to_position, trusted_keys=trusted, archive_dir=archives)
        else:
            columns = (TextColumn("verifying"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
            with Progress(*columns, console=err_console, transient=True) as bar:
                task = bar.add_task("verify", total=total)
                report = verify_log(conn, from_position, to_position, trusted_keys=trusted, archive_dir=archives,
                                    progress=lambda at: bar.update(task, completed=at - from_position))
    return report


def _configured_key() -> Ed25519PrivateKey:
    """The configured seal key; exit 2 naming the problem when there is none or it is unreadable."""
    try:
        key = load_seal_key(seal_key_settings(get_settings()))
    except SealKeyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if key is None:
        typer.echo("error: no seal key: set CHRONICLE_SEAL_KEY_FILE or CHRONICLE_SEAL_KEY"
                   " (`chronicle seal-key` makes one)", err=True)
        raise typer.Exit(2)
    return key


def seal() -> None:
    """Seal the log now, up to the safe position, with the configured seal key."""
    from infrastructure.seals import seal_log

    key = _configured_key()
    with cli_pool() as pool:
        made = seal_log(pool, key)
    if not made:
        typer.echo("nothing new to seal")
    for s in made:
        typer.echo(f"seal {s.seal_number}: positions {s.from_position + 1}-{s.to_position}, {s.event_count} events,"
                   f" root {s.merkle_root.hex()[:16]}…, key {s.key_id}")


def seal_key(
    public: bool = typer.Option(False, "--public", help="Print the configured key's public key (hex) instead."),
) -> None:
    """Print a new Ed25519 seal key (base64): keep it outside the database, e.g. `> seal.key`.

    With --public, the public key of the configured key: what auditors pass to --public-key.
    """
    if not public:
        typer.echo(new_key_text())
        return
    typer.echo(public_bytes(_configured_key()).hex())


def verify_proof(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A proof from GET /v1/events/{id}/proof."),
    public_key: list[str] = typer.Option([], "--public-key", help="A trusted seal public key (base64 or hex); repeatable."),
) -> None:
    """Check an inclusion proof offline (no database): event hash, audit path, seal and signature."""
    from infrastructure.log_proofs import check_proof

    try:
        proof = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot read {file}: {exc}", err=True)
        raise typer.Exit(2) from None
    keys = _public_keys(public_key)
    failures = check_proof(proof if isinstance(proof, dict) else {}, frozenset(keys) if keys else None)
    if failures:
        for failure in failures:
            typer.echo(f"FAILED: {failure}")
        raise typer.Exit(1)
    event, sealed = proof["event"], proof["seal"]
    typer.echo(f"ok: event {event['event_id']} (position {event['position']}, {event['stream_id']}"
               f" v{event['version']}) is in seal {sealed['seal_number']} (positions"
               f" {sealed['from_position'] + 1}-{sealed['to_position']}), signed by key {sealed['key_id']}"
               + ("" if keys else " (no --public-key given: the key is not checked against a trusted one)"))


def register_log_commands(app: typer.Typer) -> None:
    """Add the log's commands to the `chronicle` app."""
    app.command()(verify)
    app.command()(seal)
    app.command("seal-key")(seal_key)
    app.command("verify-proof")(verify_proof)
