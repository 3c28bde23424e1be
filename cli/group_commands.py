"""`chronicle groups seek`: move a consumer group's checkpoints (docs/log-segments.md).

The operator's way past an archived range a group's consumers do not need: the group's fetch
answers 410 `log_archived` until it is restored or the group is moved past it.
"""

from __future__ import annotations

import typer

from cli.common import cli_pool, echo_json, operator_actor, store
from service_layer.group_seek import seek_group
from service_layer.groups import GroupError

groups_app = typer.Typer(help="Consumer groups: move their checkpoints.", no_args_is_help=True)


@groups_app.command("seek")
def seek_command(
    group: str = typer.Argument(..., help="The consumer group's name."),
    to: int = typer.Option(..., "--to", min=0, help="The position every partition's checkpoint moves to."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Set every partition's checkpoint of GROUP to a position (recorded as operator.group_moved);
    refused in or before an archived range, and past the log's safe position."""
    actor, kind = operator_actor()
    with cli_pool() as pool:
        try:
            moved = seek_group(pool, store(pool), group, to, actor_id=actor, actor_type=kind)
        except GroupError as exc:
            typer.echo(f"error: {exc.detail}", err=True)
            raise typer.Exit(1) from None
    if as_json:
        echo_json(moved)
    else:
        typer.echo(f"group {group}: every partition's checkpoint is now {to}")
