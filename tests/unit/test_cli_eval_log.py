"""`foresight eval --log`: an access log evaluated like a session file, its bad lines counted.

The logs are written here: visitors who walk a fixed path through a small site (so the
predictors have something to learn), with their pages' subresources, among robots and garbage.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from click.testing import CliRunner, Result

from foresight.cli import cli
from producers.logline import format_line

T0 = 1_700_000_000.0
AGENT = "Mozilla/5.0 Firefox/120.0"
WALK = ["/", "/products", "/products/lamp", "/cart", "/checkout"]


def visits(n_visitors: int) -> list[str]:
    """Each visitor walks WALK a minute per page, loading a stylesheet and an image per page."""
    lines = []
    for v in range(n_visitors):
        host, start = f"10.0.{v // 250}.{v % 250}", T0 + 120 * v
        for step, page in enumerate(WALK):
            t = start + 60 * step
            lines.append(format_line(host, t, page, size=5000, agent="Firefox"))
            referer = f"https://shop.example{page}"
            for asset in ("/site.css", f"/img/{step}.png"):
                lines.append(
                    format_line(host, t + 1, asset, size=900, referer=referer, agent="Firefox")
                )
    return lines


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["eval", *args], terminal_width=200)


def test_a_thousand_malformed_lines_are_counted_and_the_good_ones_evaluated(
    tmp_path: Path,
) -> None:
    good = visits(60)
    lines = list(good)
    for n in range(1000):  # every other line of the first 2,000 is garbage
        lines.insert(2 * n + 1, f'garbage {n} [not a date] "GET" ???')
    lines += [format_line("66.249.66.1", T0, "/", agent="Googlebot/2.1")] * 7
    log = tmp_path / "access.log.gz"
    log.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    out = tmp_path / "result.json"
    result = run("--log", str(log), "--json", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    counts = report["log"]
    assert (counts["lines"], counts["good"], counts["bad"]) == (len(lines), len(good) + 7, 1000)
    assert counts["filtered"] == {"robots": 7, "method": 0, "status": 0}
    assert counts["bad_locations"][0].startswith(f"{log}:2: ")
    assert counts["bad_locations"][1].startswith(f"{log}:4: ")
    assert (counts["pages"], counts["subresources"]) == (60 * 5, 60 * 10)
    # visitors' walks are all alike: after one training walk, Markov-1 knows every next page
    assert report["events"] > 0
    assert report["models"]["markov1"]["hr@1"] == 1.0
    assert "1000 bad" in result.output.replace(",", "")
    assert f"{log}:2" in result.output


def test_the_test_period_is_the_last_fraction_of_the_span(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("\n".join(visits(50)) + "\n")
    out = tmp_path / "r.json"
    assert run("--log", str(log), "--test-fraction", "0.5", "--json", str(out)).exit_code == 0
    split = json.loads(out.read_text())["log"]
    assert split["train_sessions"] + split["test_sessions"] == 50
    assert 20 <= split["test_sessions"] <= 30


def test_a_log_of_garbage_only_is_one_line_and_exit_1(tmp_path: Path) -> None:
    log = tmp_path / "junk.log"
    log.write_text("nothing\nto see\n")
    result = run("--log", str(log))
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "junk.log" in result.output and "no line" in result.output


def test_log_and_train_test_are_mutually_exclusive(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("\n".join(visits(2)) + "\n")
    tsv = tmp_path / "s.tsv"
    tsv.write_text("SessionId\tItemId\tTime\n1\ta\t1\n")
    for args in (
        ["--log", str(log), "--train", str(tsv), "--test", str(tsv)],
        ["--log", str(log), "--test", str(tsv)],
        [],
        ["--train", str(tsv)],
        ["--train", str(tsv), "--test", str(tsv), "--session-gap-min", "10"],
    ):
        result = run(*args)
        assert result.exit_code != 0, args
        assert isinstance(result.exception, SystemExit), result.exception
        assert len(result.output.strip().splitlines()) == 1, (args, result.output)
