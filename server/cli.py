"""The ``boxfs-server`` command line. The server arrives later; for now it reports its version."""

from __future__ import annotations

import argparse
from importlib.metadata import version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="boxfs-server", description="The boxfs server.")
    parser.add_argument("--version", action="version", version=f"boxfs-server {version('boxfs')}")
    parser.parse_args(argv)
    parser.print_help()
    return 0
