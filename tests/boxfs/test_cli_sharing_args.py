"""The sharing commands' arguments, and that every command the parser knows is documented
in ``docs/cli.md``; no server needed."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from boxfs.cli.parser import build_parser

CLI_DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_share_takes_repeated_users_and_leaves_the_role_to_its_default() -> None:
    args = build_parser().parse_args(["share", "Team", "--with", "bob", "--with", "carol"])
    assert (args.path, args.with_users, args.role, args.remove, args.list) == (
        "Team", ["bob", "carol"], None, [], False,
    )  # fmt: skip
    args = build_parser().parse_args(["share", "Team", "--remove", "bob", "--remove", "x"])
    assert args.remove == ["bob", "x"]


def test_log_defaults_to_the_drive_and_twenty_commits() -> None:
    args = build_parser().parse_args(["log"])
    assert (args.path, args.count) == ("/", 20)
    assert build_parser().parse_args(["log", "Team", "-n", "3"]).count == 3


def test_accept_takes_an_id_and_an_optional_place() -> None:
    args = build_parser().parse_args(["accept", "ab" * 16, "--at", "Work"])
    assert (args.invitation_id, args.at) == ("ab" * 16, "Work")
    assert build_parser().parse_args(["accept", "ab" * 16]).at is None


def test_every_command_has_a_section_in_the_cli_doc() -> None:
    parser = build_parser()
    commands = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    documented = set(re.findall(r"^### `([a-z]+)", CLI_DOC.read_text(), re.MULTILINE))
    documented |= set(re.findall(r"^### `[a-z]+ [^`]*`, `([a-z]+)", CLI_DOC.read_text(), re.M))
    assert set(commands.choices) - documented == set()
