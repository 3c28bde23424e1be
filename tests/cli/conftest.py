"""Fixtures for the CLI tests: `chronicle` run as a subprocess on a database of its own."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.api.conftest import chronicle_env
from tests.conftest import migrated_database_fixture

ROOT = Path(__file__).resolve().parents[2]
CHRONICLE = str(Path(sys.executable).parent / "chronicle")


cli_database_url = migrated_database_fixture("module", "A migrated database for one CLI test module.")


@pytest.fixture
def chronicle(cli_database_url: str) -> Callable[..., subprocess.CompletedProcess]:
    """Run `chronicle ARGS` against the module's database; returns the finished process."""

    def run(*args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [CHRONICLE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
            env=chronicle_env(DATABASE_URL=cli_database_url, CHRONICLE_ACTOR="cli-tester", COLUMNS="200", **env),
        )
        if check:
            assert result.returncode == 0, f"{args}: {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result

    return run
