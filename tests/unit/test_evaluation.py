"""The evaluation protocol, its scores, and its agreement with published reference numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from streams.baselines import Markov1, SequentialRules
from streams.evaluation import (
    DEFAULT_MODELS,
    Tally,
    evaluate,
    read_sessions,
    render_table,
    run,
    work,
)
from streams.predictor import Foresight, ForesightConfig

HEADER = "SessionId\tItemId\tTime\n"


def write(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    path.write_text(HEADER + "".join(f"{s}\t{i}\t{t}\n" for s, i, t in rows))
    return path


class Spy:
    """A predictor that records the order of calls and what it knew when it predicted."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def predict(self, client_id: str, k: int = 5) -> list[tuple[str, float]]:
        self.calls.append(("predict", client_id, ""))
        return [("b", 0.9), ("x", 0.5)][:k]

    def learn(self, client_id: str, content_id: str, ts: float) -> None:
        self.calls.append(("learn", client_id, content_id))


def test_sessions_are_ordered_by_first_click_and_clicks_by_time(tmp_path: Path) -> None:
    rows = [("late", "c", 30.0), ("late", "a", 10.0), ("early", "z", 5.0), ("late", "b", 20.0)]
    sessions = read_sessions(write(tmp_path / "t.tsv", rows))
    assert [s for s, _ in sessions] == ["early", "late"]
    assert [item for _, item in sessions[1][1]] == ["a", "b", "c"]


def test_a_bad_file_is_refused_with_its_line(tmp_path: Path) -> None:
    bad_header = tmp_path / "h.tsv"
    bad_header.write_text("a\tb\tc\n1\t2\t3\n")
    with pytest.raises(ValueError, match="header"):
        read_sessions(bad_header)
    bad_row = tmp_path / "r.tsv"
    bad_row.write_text(HEADER + "1\tx\t1.0\n1\ty\tnot-a-time\n")
    with pytest.raises(ValueError, match=":3:"):
        read_sessions(bad_row)


def test_train_is_learned_and_each_test_click_is_scored_before_it_is_learned(
    tmp_path: Path,
) -> None:
    train = write(tmp_path / "train.tsv", [("t1", "a", 1.0), ("t1", "b", 2.0)])
    test = write(tmp_path / "test.tsv", [("q", "a", 10.0), ("q", "b", 11.0), ("q", "c", 12.0)])
    spy = Spy()
    run(spy, read_sessions(train), read_sessions(test))
    assert spy.calls == [
        ("learn", "t1", "a"),
        ("learn", "t1", "b"),
        ("learn", "q", "a"),  # the first click of a test session is not scored
        ("predict", "q", ""),
        ("learn", "q", "b"),
        ("predict", "q", ""),
        ("learn", "q", "c"),
    ]


def test_scores_of_a_hand_made_case() -> None:
    tally = Tally(threshold=0.15)
    tally.add([("b", 0.9), ("x", 0.5)], "b")  # a hit at rank 1
    tally.add([("b", 0.9), ("x", 0.5)], "c")  # a miss
    tally.add([("y", 0.1), ("c", 0.05)] + [(f"f{i}", 0.0) for i in range(4)], "c")  # rank 2
    scores = tally.result()
    assert scores["hr@1"] == pytest.approx(1 / 3)
    assert scores["hr@3"] == pytest.approx(2 / 3)
    assert scores["mrr@5"] == pytest.approx((1 + 0.5) / 3)
    assert scores["precision"] == pytest.approx(1 / 4)  # 4 items at or above 0.15, 1 right
    assert scores["prefetches_per_click"] == pytest.approx(4 / 3)
    squares = [0.1**2, 0.5**2, 0.9**2, 0.5**2, 0.1**2, 0.95**2, 0, 0, 0]
    assert scores["brier"] == pytest.approx(sum(squares) / 9)  # top 5 of each list


def test_evaluate_reports_every_model_and_drives_the_progress_bar(tmp_path: Path) -> None:
    rows = [(f"s{n}", f"i{(n + j) % 7}", n * 100.0 + j) for n in range(30) for j in range(4)]
    train = write(tmp_path / "train.tsv", rows[:80])
    test = write(tmp_path / "test.tsv", rows[80:])
    advanced: list[int] = []
    result = evaluate(train, test, progress=advanced.append)
    assert result["events"] == 30  # 10 test sessions of 4 clicks, 3 scored each
    assert set(result["models"]) == set(DEFAULT_MODELS)
    for scores in result["models"].values():
        for key in ("hr@1", "hr@3", "hr@5", "hr@20", "mrr@5", "precision", "brier"):
            assert 0.0 <= scores[key] <= 1.0
        assert scores["hr@1"] <= scores["hr@3"] <= scores["hr@5"] <= scores["hr@20"]
    assert sum(advanced) == work(train, test) == 4 * 120
    console = Console(record=True, width=200)
    console.print(render_table(result))
    text = console.export_text()
    assert all(name in text for name in DEFAULT_MODELS)


def test_the_references_land_on_the_published_numbers_for_this_sample(
    yoochoose_dir: Path,
) -> None:
    """Markov-1 0.498 and SR 0.509 HR@5 (test-then-train): the protocol is the usual one."""
    train = read_sessions(yoochoose_dir / "train_full.tsv")
    test = read_sessions(yoochoose_dir / "test.tsv")
    assert run(Markov1(), train, test)["hr@5"] == pytest.approx(0.498, abs=0.01)
    assert run(SequentialRules(), train, test)["hr@5"] == pytest.approx(0.509, abs=0.01)


def test_a_client_id_column_scores_returning_and_new_clients_apart(tmp_path: Path) -> None:
    """With ClientId, a client's sessions are predicted under its id, and its clicks count as
    returning from its second session on (training sessions count as earlier ones)."""
    head = "SessionId\tItemId\tTime\tClientId\n"
    train = tmp_path / "train.tsv"
    train.write_text(head + "1\ta\t1.0\told\n1\tb\t2.0\told\n")
    test = tmp_path / "test.tsv"
    test.write_text(
        head + "2\tb\t5000.0\told\n2\tz\t5001.0\told\n"  # returning: one scored click, a miss
        "3\ta\t6000.0\tfresh\n3\tb\t6001.0\tfresh\n3\tb\t6002.0\tfresh\n"  # new: two hits
    )
    assert [client for client, _ in read_sessions(test)] == ["old", "fresh"]
    spy = Spy()
    scores = run(spy, read_sessions(train), read_sessions(test))
    assert {client for _, client, _ in spy.calls} == {"old", "fresh"}
    assert scores["returning"]["clicks"] == 1 and scores["returning"]["hr@5"] == 0.0
    assert scores["new"]["clicks"] == 2 and scores["new"]["hr@5"] == 1.0
    assert scores["hr@5"] == pytest.approx(2 / 3)
    table = render_table({"events": 3, "models": {"spy": scores}})
    assert [column.header for column in table.columns][-3:] == ["hr@5 ret", "mrr@5 ret", "hr@5 new"]


def test_returning_clients_of_movielens_are_predicted_better_than_by_sr(
    yoochoose_dir: Path,
) -> None:
    """Issue 15's bar on movielens-small, where clients come back: HR@5 at least 0.056 over all
    scored clicks, and over returning clients' clicks at least 1.3 x SR's on the same clicks;
    what a returning client requested before is what earns it (the shared-only ablation)."""
    movielens = yoochoose_dir.parent / "movielens-small"
    train = read_sessions(movielens / "train.tsv")
    test = read_sessions(movielens / "test.tsv")
    foresight = run(Foresight(), train, test)
    sr = run(SequentialRules(), train, test)
    shared = run(Foresight(ForesightConfig(personal=False)), train, test)
    assert foresight["hr@5"] >= 0.056
    assert foresight["returning"]["hr@5"] >= 1.3 * sr["returning"]["hr@5"]
    assert foresight["returning"]["hr@5"] > shared["returning"]["hr@5"]
