"""``boxfs link``'s own parsing: durations for ``--expires``, and which options go together."""

from __future__ import annotations

import pytest

from boxfs.cli import ExitCode, main
from boxfs.cli.commands_links import parse_duration_s
from boxfs.errors import UsageError


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("2s", 2),
        ("30m", 1800),
        ("12h", 43_200),
        ("7d", 604_800),
        ("2w", 1_209_600),
        (" 3D ", 259_200),
    ],
)
def test_an_expiry_is_a_number_and_a_unit(text: str, seconds: int) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "d", "1.5h", "-1d", "0s", "7 days", "99999999999w"])
def test_an_expiry_without_a_unit_or_out_of_range_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--expires"):
        parse_duration_s(text)


@pytest.mark.parametrize(
    "argv",
    [
        ["link"],
        ["link", "a", "--list"],
        ["link", "--list", "--revoke", "0" * 32],
        ["link", "--list", "--upload-only"],
        ["link", "--revoke", "0" * 32, "--expires", "7d"],
    ],
)
def test_link_takes_a_path_or_list_or_revoke_alone(
    argv: list[str],
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BOXFS_HOME", str(tmp_path))
    assert main(argv) == ExitCode.USAGE
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("boxfs: "), err
