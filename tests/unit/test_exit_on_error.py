"""How every entry point ends on an error it expected: one line, exit status 2; anything else stays loud."""

from __future__ import annotations

import pytest

from services.common.errors import ERROR_EXIT, ConfigError, exit_on_error


def test_an_expected_error_ends_with_one_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    def main() -> None:
        raise ConfigError("the lake root is not a directory")

    with pytest.raises(SystemExit) as ended:
        exit_on_error(main)
    assert ended.value.code == ERROR_EXIT == 2
    assert capsys.readouterr().err == "error: the lake root is not a directory\n"


def test_an_unexpected_error_keeps_its_traceback() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        exit_on_error(lambda: int("x"))


def test_a_command_that_ends_well_returns() -> None:
    ran = []
    exit_on_error(lambda: ran.append(True))
    assert ran == [True]
