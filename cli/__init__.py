"""The command line: `chronicle` (typer), one module per group of commands."""
