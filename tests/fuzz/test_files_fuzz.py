"""The CLI's file readers on 10,000 generated files each, and the CLI on pathological ones.

read_yoochoose must yield records the schema accepts or raise DatasetError saying where
(file and line); read_sessions must return sessions or raise ValueError saying where;
read_jsonl must yield lines, each of which the Interaction decoder accepts or refuses with
InvalidRecord. Then `foresight produce` and `foresight eval` on pathological files: exit status
1 with one line of error (or, for produce, the rejected count), never a traceback.
"""

from __future__ import annotations

import collections
import functools
import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import strategies as st

from foresight.settings import Settings
from producers.datasets import DatasetError, read_jsonl, read_yoochoose
from schemas import Interaction, InvalidRecord, decode, encode
from streams.evaluation import read_sessions
from tests.integration.conftest import settings_env

from . import strategies as fz
from .conftest import Figure

FILES = 10_000
# A CLI run imports river and friends (2-3 s here); a hung one is killed after this.
CLI_TIMEOUT_S = 90.0
HEADER = b"SessionId\tItemId\tTime"
TIMES = [b"1396839069.277", b"0", b"-1", b"nan", b"inf", b"-inf", b"1e999", b"", b" 7 ", b"1_0"]
NASTY = [b'"', b'"quoted\tcell"', b"\x00", b"\r", b"\xff\xfe", b"caf\xc3\xa9", b"a b", b"-x"]


@st.composite
def cells(draw: st.DrawFn, column: int) -> bytes:
    kind = draw(st.sampled_from(["good"] * 6 + ["text", "nasty", "long"]))
    if kind == "good":
        if column == 2:
            return draw(st.sampled_from(TIMES[:3]) | st.floats(0, 2e9).map(repr).map(str.encode))
        return draw(fz.identifiers).encode()
    if kind == "text":
        return draw(st.text(max_size=20)).encode("utf-8", "surrogatepass")
    if kind == "nasty":
        return draw(st.sampled_from(NASTY + TIMES[3:]))
    # Now and then past csv's field limit (131,072 characters): about one file in fifty.
    return b"x" * draw(st.sampled_from([1] * 30 + [1000, 140_000]))


@st.composite
def tsv_rows(draw: st.DrawFn) -> bytes:
    width = draw(st.sampled_from([3] * 8 + [0, 1, 2, 4]))
    return b"\t".join(draw(cells(column)) for column in range(width))


ROWS = tsv_rows()


@st.composite
def tsv_files(draw: st.DrawFn) -> bytes:
    header = draw(
        st.sampled_from(
            [HEADER] * 8
            + [b"", b"\xef\xbb\xbf" + HEADER, b"SessionId ItemId Time", HEADER + b"\tExtra"]
        )
    )
    # Rows come from a pool of a thousand, drawn once: a file is then a few cheap draws.
    rows = draw(st.lists(fz.pooled(ROWS, 1000), max_size=6))
    newline = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    return newline.join([header, *rows]) + draw(st.sampled_from([b"", newline]))


LINES = fz.hostile_bytes(fz.interactions())


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(fz.pooled(LINES, 1000), max_size=6))
    return draw(st.sampled_from([b"\n", b"\r\n"])).join(lines)


@functools.cache
def files(kind: str) -> list[bytes]:
    """The generated files, the same for both TSV readers (a file is a handful of draws from
    the pools, so batches of 100 are as cheap as batches of 20 of a whole record)."""
    return fz.generate(jsonl_files() if kind == "jsonl" else tsv_files(), FILES, batch=100)


@dataclass
class Tally:
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    wrong: list[tuple[str, str, bytes]] = field(default_factory=list)

    def bad(self, what: str, detail: str, content: bytes) -> None:
        self.outcomes[what] += 1
        self.wrong.append((what, detail[:160], content[:160]))


def read_with_yoochoose(path: Path, content: bytes, tally: Tally) -> None:
    try:
        events = list(read_yoochoose(path))
    except DatasetError as exc:
        if str(exc).startswith(str(path)):
            tally.outcomes["DatasetError with its place"] += 1
        else:
            tally.bad("DatasetError without its place", str(exc), content)
        return
    except Exception as exc:
        tally.bad(type(exc).__name__, str(exc), content)
        return
    refused = 0
    for event in events:
        try:
            decode(Interaction, encode(event))
        except InvalidRecord:
            refused += 1
    if refused:
        tally.bad("yielded records the schema refuses", f"{refused} of {len(events)}", content)
    else:
        tally.outcomes["parsed"] += 1


def read_with_sessions(path: Path, content: bytes, tally: Tally) -> None:
    try:
        read_sessions(path)
    except ValueError as exc:
        if str(path) in str(exc):
            tally.outcomes["ValueError with its place"] += 1
        else:
            tally.bad(f"{type(exc).__name__} without its place", str(exc), content)
        return
    except Exception as exc:
        tally.bad(type(exc).__name__, str(exc), content)
        return
    tally.outcomes["parsed"] += 1


def read_with_jsonl(content: bytes, tally: Tally) -> None:
    try:
        lines = list(read_jsonl(io.BytesIO(content)))
    except Exception as exc:
        tally.bad(f"read_jsonl raised {type(exc).__name__}", str(exc), content)
        return
    for line in lines:
        try:
            decode(Interaction, line)
            tally.outcomes["line valid"] += 1
        except InvalidRecord:
            tally.outcomes["line refused with InvalidRecord"] += 1
        except Exception as exc:
            tally.bad(f"line raised {type(exc).__name__}", str(exc), line)


@pytest.mark.parametrize("reader", ["read_yoochoose", "read_sessions", "read_jsonl"])
def test_a_file_reader_parses_or_says_where_the_file_is_wrong(
    reader: str, tmp_path: Path, figure: Figure
) -> None:
    tally = Tally()
    path = tmp_path / "sessions.tsv"
    contents = files("jsonl" if reader == "read_jsonl" else "tsv")
    for content in contents:
        if reader == "read_jsonl":
            read_with_jsonl(content, tally)
            continue
        path.write_bytes(content)
        (read_with_yoochoose if reader == "read_yoochoose" else read_with_sessions)(
            path, content, tally
        )
    figure(
        f"file {reader}",
        f"{len(contents)} files: "
        + ", ".join(f"{n} {what}" for what, n in tally.outcomes.most_common()),
        files=len(contents),
        outcomes=dict(tally.outcomes),
        wrong_samples=tally.wrong[:5],
    )
    kinds = collections.Counter(what for what, _, _ in tally.wrong)
    assert not tally.wrong, f"{dict(kinds)}, e.g. {fz.shortest(tally.wrong, lambda w: len(w[2]))}"


# --- The CLI on pathological files --------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    content: bytes
    # "error": one line `error: ...` on stderr; "rejected": the `sent=N rejected=M` summary
    expect: str = "error"


YOOCHOOSE_CASES = [
    Case("no header", ("--dataset", "yoochoose"), b"1\t2\t3\n"),
    Case("time not a number", ("--dataset", "yoochoose"), HEADER + b"\n1\t2\tsoon\n"),
    Case("session id with a space", ("--dataset", "yoochoose"), HEADER + b"\nabc def\t2\t3\n"),
    Case("not UTF-8", ("--dataset", "yoochoose"), HEADER + b"\n1\t\xff\xfe\t3\n"),
    Case("cell over 128 KiB", ("--dataset", "yoochoose"), HEADER + b"\n1\t" + b"x" * 140_000),
    Case("time NaN", ("--dataset", "yoochoose"), HEADER + b"\n1\t2\tnan\n"),
]
JSONL_CASES = [
    Case("garbage lines", (), b"\x00\xff\n{broken\n[[[[[[[[\n" + b'{"a":' * 5000, "rejected"),
    Case("not UTF-8 in a string", (), b'{"\xb2event_id": "e", "client_id": "c"}\n', "rejected"),
]
EVAL_CASES = [
    Case("empty file", (), b""),
    Case("bad row", (), HEADER + b"\n1\t2\n"),
    Case("not UTF-8", (), HEADER + b"\n1\t\xff\t3\n"),
    Case("cell over 128 KiB", (), HEADER + b"\n1\t" + b"x" * 140_000 + b"\t3\n"),
]


def run_case(case: Case, command: list[str], env: dict[str, str] | None) -> dict[str, object]:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "foresight", *command],
            env=env,
            capture_output=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"case": case.name, "ok": False, "why": f"no exit in {CLI_TIMEOUT_S} s"}
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    lines = [line for line in err.splitlines() if line.strip()]
    why = ""
    if "Traceback" in out + err:
        why = "traceback: " + (lines[-1] if lines else "")
    elif done.returncode != 1:
        why = f"exit status {done.returncode}"
    elif case.expect == "error" and not (len(lines) == 1 and lines[0].startswith("error:")):
        why = f"not one error line: {lines[:3]}"
    elif case.expect == "rejected" and "rejected=" not in out:
        why = f"no rejected count: {out[-200:]}"
    return {"case": case.name, "ok": not why, "why": why, "status": done.returncode}


def run_cases(
    cases: list[tuple[Case, list[str]]], env: dict[str, str] | None
) -> list[dict[str, object]]:
    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores
        return list(pool.map(lambda c: run_case(c[0], c[1], env), cases))


def report(label: str, results: list[dict[str, object]], figure: Figure) -> None:
    failed = [r for r in results if not r["ok"]]
    figure(
        label,
        f"{len(results)} pathological files, {len(results) - len(failed)} ended in one line and "
        f"exit 1; failed: {[(r['case'], r['why']) for r in failed]}",
        cases=results,
    )
    assert not failed, failed


@pytest.mark.integration
def test_foresight_produce_refuses_pathological_files_in_one_line(
    settings: Settings, tmp_path: Path, figure: Figure
) -> None:
    cases = []
    for n, case in enumerate(YOOCHOOSE_CASES + JSONL_CASES):
        path = tmp_path / f"case-{n}.{'tsv' if case.args else 'jsonl'}"
        path.write_bytes(case.content)
        cases.append((case, ["produce", str(path), *case.args]))
    report("cli produce", run_cases(cases, settings_env(settings)), figure)


def test_foresight_eval_refuses_pathological_files_in_one_line(
    tmp_path: Path, figure: Figure
) -> None:
    good = tmp_path / "good.tsv"
    good.write_bytes(HEADER + b"\n1\t2\t1\n1\t3\t2\n2\t2\t3\n2\t3\t4\n")
    cases = []
    for n, case in enumerate(EVAL_CASES):
        path = tmp_path / f"case-{n}.tsv"
        path.write_bytes(case.content)
        cases.append((case, ["eval", "--train", str(good), "--test", str(path)]))
    report("cli eval", run_cases(cases, None), figure)
