"""`foresight agent` with a bad argument or setting: one line and exit status 1, no traceback."""

from __future__ import annotations

from click.testing import CliRunner

from foresight.cli import cli


def test_a_secret_too_short_to_issue_a_token_is_one_line_and_exit_1() -> None:
    result = CliRunner().invoke(
        cli,
        ["agent", "client-1", "--url", "http://127.0.0.1:1"],
        env={"FORESIGHT_AGENT_TOKEN_SECRETS": '["short"]', "FORESIGHT_AGENT_TOKEN": None},
    )
    assert isinstance(result.exception, SystemExit), result.exception  # not a ValueError
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "FORESIGHT_AGENT_TOKEN_SECRETS" in lines[0] and "32 bytes" in lines[0]
