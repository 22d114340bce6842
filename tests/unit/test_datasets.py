"""The file readers turn real rows into events and refuse what is not in their format."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from producers.datasets import DatasetError, count_lines, read_jsonl, read_yoochoose

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "yoochoose-100k"


def test_yoochoose_rows_become_click_events(tmp_path: Path) -> None:
    path = tmp_path / "mini.tsv"
    path.write_text("SessionId\tItemId\tTime\n1\t214536502\t1396860669.277\n1\t99\t1396860886.9\n")
    events = list(read_yoochoose(path))
    assert [e.content_id for e in events] == ["214536502", "99"]
    assert {e.client_id for e in events} == {"1"}
    assert events[0].ts == pytest.approx(1396860669.277)
    assert len({e.event_id for e in events}) == 2


def test_real_test_split_has_one_event_per_row() -> None:
    path = DATA / "test.tsv"
    assert sum(1 for _ in read_yoochoose(path)) == count_lines(path) - 1 == 13568


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b,c\n1,2,3\n", "header"),
        ("SessionId\tItemId\tTime\n1\t2\n", "3 columns"),
        ("SessionId\tItemId\tTime\n1\t2\tsoon\n", "not a number"),
        ("", "header"),
    ],
)
def test_bad_tsv_names_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        list(read_yoochoose(path))


def test_jsonl_skips_blank_lines() -> None:
    lines = list(read_jsonl(io.BytesIO(b'{"a":1}\n\n  \n{"b":2}\n')))
    assert lines == [b'{"a":1}', b'{"b":2}']


def test_a_client_id_column_makes_a_clients_sessions_one_client(tmp_path: Path) -> None:
    """movielens-small's fourth column: two sessions of client 7 are one client that comes
    back; without the column each session is its own client."""
    path = tmp_path / "clients.tsv"
    path.write_text(
        "SessionId\tItemId\tTime\tClientId\n1\ta\t10.0\t7\n1\tb\t20.0\t7\n2\tc\t9000.0\t7\n"
        "3\td\t9100.0\t8\n"
    )
    assert [e.client_id for e in read_yoochoose(path)] == ["7", "7", "7", "8"]
    short = tmp_path / "short.tsv"
    short.write_text("SessionId\tItemId\tTime\tClientId\n1\ta\t10.0\n")
    with pytest.raises(DatasetError, match="expected 4 columns"):
        list(read_yoochoose(short))
