"""The ``boxfs`` command line. Commands arrive with the client; for now it reports its version."""

from __future__ import annotations

import argparse
from importlib.metadata import version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="boxfs", description="The boxfs drive client.")
    parser.add_argument("--version", action="version", version=f"boxfs {version('boxfs')}")
    parser.parse_args(argv)
    parser.print_help()
    return 0
