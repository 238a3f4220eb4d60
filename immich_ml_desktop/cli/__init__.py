"""`immich-ml-desktop`: no arguments opens the window; subcommands run the same jobs headless.

Each command lives in its own module under `cli/` with `register(subparsers)`; errors a user can meet
print one clear line on stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable

from immich_ml_desktop import __version__
from immich_ml_desktop.errors import UserError

# Modules under immich_ml_desktop.cli that add subcommands, in the order `--help` lists them.
COMMAND_MODULES = [
    "devices",
    "predict",
    "models",
    "serve",
    "index",
    "stats",
    "results",
    "search",
    "cluster",
    "immich",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="immich-ml-desktop",
        description="Immich's machine learning on your workstation. Without a command, opens the window.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("--tray", action="store_true",
                        help="without a command: start in the system tray, the window hidden (what start at login runs)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"immich_ml_desktop.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"immich_ml_desktop.cli.{name}":
                continue  # command not built yet in this checkout
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None, open_window: Callable[[], int] | None = None) -> int:
    """Run a command; without one, `open_window` (the GUI, given by `immich_ml_desktop.main`) or help."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        if open_window is None:
            parser.print_help()
            return 0
        return open_window()
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit, where a closed pipe could only print "Exception ignored"
        return code
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # some other pipe or socket: a real fault
        # The reader of our output went away (`stats | head -3`): stop quietly, as command-line tools do.
        # stdout is pointed at /dev/null so that the exit's flush of what is still buffered cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # what a shell reports for a tool ended by SIGPIPE


def _stdout_closed() -> bool:
    """Whether stdout is a pipe (or socket) whose reader has gone: poll() reports POLLERR for it."""
    import select

    try:
        fd = sys.stdout.fileno()
    except (ValueError, OSError):
        return False
    if not hasattr(select, "poll"):
        return True  # Windows: no way to ask; the broken pipe was most likely stdout
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
