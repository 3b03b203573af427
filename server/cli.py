"""The ``boxfs-server`` command: run the server, or rotate its master key.

    boxfs-server --data DIR [--listen HOST:PORT]     serve (embedded defaults)
    boxfs-server rotate-key --data DIR              re-wrap data keys under a new master

Exit codes: 0 success, 2 bad usage, 1 anything else (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from importlib.metadata import version
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

from server.app import create_app
from server.keys import rotate_master_key
from server.settings import DEFAULT_LISTEN, Settings
from server.state import ServerState
from store.errors import StoreError


def _serve(settings: Settings) -> int:
    host, port = settings.host_port
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=5,
        # Keep-alive connections from mounts stay open between batches.
        timeout_keep_alive=75,
    )
    server = _Server(config, app)
    # uvicorn turns SIGTERM/SIGINT into a graceful shutdown (stop accepting, drain, close
    # the lifespan), then raises the signal again for the handler that was installed
    # before it: this one, so a requested stop exits with status 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_after_shutdown)
    server.run()
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server, ending the open event streams as soon as a shutdown is asked for:
    each would otherwise hold the graceful shutdown for its whole timeout (every mount
    keeps one open)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        state = getattr(self._app.state, "server", None)  # set by the lifespan
        if isinstance(state, ServerState):
            # A signal handler, on the loop's thread but between any two of its steps:
            # hand the close to the loop.
            asyncio.get_running_loop().call_soon_threadsafe(state.events.close)


def _exit_after_shutdown(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _rotate_key(settings: Settings) -> int:
    old_id, new_id, count = rotate_master_key(settings)
    print(f"rotated master key {old_id} -> {new_id}: re-wrapped {count} data keys")
    return 0


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    command = "serve"
    if args_list and args_list[0] in ("serve", "rotate-key"):
        command, args_list = args_list[0], args_list[1:]
    parser = argparse.ArgumentParser(
        prog=f"boxfs-server {command}" if command != "serve" else "boxfs-server",
        description="The boxfs server. Commands: serve (default), rotate-key.",
    )
    parser.add_argument("--version", action="version", version=f"boxfs-server {version('boxfs')}")
    parser.add_argument("--data", type=Path, required=True, help="data directory")
    if command == "serve":
        parser.add_argument(
            "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})"
        )
        parser.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in --data)")
    args = parser.parse_args(args_list)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings(
        data_dir=args.data.resolve(),
        listen=getattr(args, "listen", DEFAULT_LISTEN),
        database_url=getattr(args, "database_url", None),
    )
    try:
        settings.host_port  # noqa: B018  (validates --listen before anything starts)
    except ValueError:
        print(f"boxfs-server: --listen must be HOST:PORT, got {settings.listen!r}", file=sys.stderr)
        return 2
    try:
        return _serve(settings) if command == "serve" else _rotate_key(settings)
    except (StoreError, OSError) as exc:
        print(f"boxfs-server: {exc}", file=sys.stderr)
        return 1
