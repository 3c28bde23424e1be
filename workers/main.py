"""`chronicle worker`: start dramatiq worker processes and threads on Chronicle's actors."""

from __future__ import annotations

import sys
from collections.abc import Sequence

# The module dramatiq imports: it sets up the broker, then declares the actors.
BROKER_MODULE = "workers.actors"


def worker_argv(processes: int = 1, threads: int = 8, extra: Sequence[str] = ()) -> list[str]:
    """The dramatiq command-line arguments for these options (any dramatiq option in `extra`)."""
    return [BROKER_MODULE, "--processes", str(processes), "--threads", str(threads), *extra]


def run_worker(processes: int = 1, threads: int = 8, extra: Sequence[str] = ()) -> int:
    """Run dramatiq's worker in this process until it is stopped; return its exit code."""
    from dramatiq.cli import main, make_argument_parser

    from workers.observability import clear_stale_metrics

    clear_stale_metrics()  # before the processes start: their metric files are theirs alone
    return main(make_argument_parser().parse_args(worker_argv(processes, threads, extra)))


if __name__ == "__main__":
    sys.exit(run_worker(*(int(a) for a in sys.argv[1:3])))
