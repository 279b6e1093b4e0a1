"""Calling the CLI in-process from tests, as a user's shell would."""

import pytest

from archsim.cli import main


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``archsim ARGS...``."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err
