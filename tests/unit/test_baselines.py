"""The reference predictors rank tiny hand-made sessions the way their definitions say."""

from __future__ import annotations

import random

import pytest

from streams.baselines import (
    Leaderboard,
    Markov1,
    Popularity,
    SequenceRules,
    SequentialRules,
    top_k,
)


def feed(model: Markov1 | SequentialRules | Popularity, sessions: list[list[str]]) -> None:
    for number, items in enumerate(sessions):
        for item in items:
            model.learn(f"s{number}", item, 0.0)


def test_markov1_predicts_the_most_frequent_successor_first() -> None:
    model = Markov1()
    feed(model, [["a", "b"], ["a", "b"], ["a", "c"], ["x", "a", "d"]])
    model.learn("new", "a", 1.0)
    ranked = model.predict("new", k=5)
    assert [item for item, _ in ranked] == ["b", "c", "d"]
    assert ranked[0][1] == pytest.approx(0.5)  # 2 of the 4 clicks that followed "a"


def test_markov1_only_looks_one_step_back() -> None:
    model = Markov1()
    feed(model, [["a", "x", "b"]])
    model.learn("new", "a", 1.0)
    assert [item for item, _ in model.predict("new")] == ["x"]


def test_sr_weights_a_rule_by_one_over_the_distance() -> None:
    model = SequentialRules()
    feed(model, [["a", "b", "c"]])  # a->b weighs 1, a->c weighs 1/2
    model.learn("new", "a", 1.0)
    ranked = model.predict("new")
    assert [item for item, _ in ranked] == ["b", "c"]
    assert [p for _, p in ranked] == pytest.approx([1 / 1.5, 0.5 / 1.5])


def test_sr_sums_rules_so_many_distant_successors_beat_one_near_one() -> None:
    model = SequentialRules()
    feed(model, [["a", "near"], ["a", "x", "far"], ["a", "y", "far"], ["a", "z", "far"]])
    model.learn("new", "a", 1.0)
    ranked = [item for item, _ in model.predict("new", k=10)]
    assert ranked.index("far") < ranked.index("near")  # 3 x 1/2 > 1


def test_sr_forgets_beyond_its_window() -> None:
    model = SequentialRules(steps=10)
    feed(model, [["a", *[f"f{i}" for i in range(9)], "tenth", "eleventh"]])
    model.learn("new", "a", 1.0)
    ranked = [item for item, _ in model.predict("new", k=20)]
    assert "tenth" in ranked
    assert "eleventh" not in ranked


def test_sr_scores_from_the_last_click_only() -> None:
    model = SequentialRules()
    feed(model, [["a", "from-a"], ["b", "from-b"]])
    for item in ["a", "b"]:
        model.learn("new", item, 1.0)
    assert [item for item, _ in model.predict("new")] == ["from-b"]


def test_rule_predictors_rank_beyond_their_kept_leaders_exactly() -> None:
    model = SequentialRules()
    feed(model, [["a", f"x{i:02d}"] for i in range(50)] + [["a", "x07"], ["a", "x42"]])
    model.learn("new", "a", 1.0)
    ranked = [item for item, _ in model.predict("new", k=45)]
    assert ranked[:2] == ["x07", "x42"]
    assert ranked[2:] == sorted(ranked[2:])
    assert len(ranked) == 45


def test_rule_predictors_know_nothing_of_an_unseen_client_or_item() -> None:
    model = SequentialRules()
    feed(model, [["a", "b"]])
    assert model.predict("nobody") == []
    model.learn("new", "never-followed", 1.0)
    assert model.predict("new") == []


def test_popularity_ranks_by_count_with_ties_by_id() -> None:
    model = Popularity()
    feed(model, [["b", "a", "c", "c", "b", "c"]])
    ranked = model.predict("anyone", k=3)
    assert [item for item, _ in ranked] == ["c", "b", "a"]
    assert [p for _, p in ranked] == pytest.approx([3 / 6, 2 / 6, 1 / 6])
    model.learn("x", "a", 0.0)  # a and b tie at 2: the smaller id first
    assert [item for item, _ in model.predict("anyone", k=3)] == ["c", "a", "b"]


def test_leaderboard_leaders_match_a_full_sort_under_weighted_updates() -> None:
    rng = random.Random(3)
    model = Leaderboard(leaders=5)
    for step in range(3000):
        model.add(f"i{rng.randrange(40)}", rng.choice([0.5, 1.0, 2.0]) * 1.002**step)
        if step % 500 == 0:
            model.rescale(0.25)
        assert model.top(5) == [item for item, _ in top_k(model.scores.items(), 5)]
    assert model.top(12) == [item for item, _ in top_k(model.scores.items(), 12)]


def test_sequence_rules_rejects_an_empty_window() -> None:
    with pytest.raises(ValueError, match="steps"):
        SequenceRules(steps=0)


def test_pruning_keeps_the_best_rules_and_their_shares() -> None:
    rules = SequenceRules(steps=1, leaders=3)
    for n in range(20):
        for _ in range(n + 1):
            rules.observe(["a"], f"b{n:02d}")
    row = rules.row("a")
    before = [(item, row.scores[item] / row.total) for item in row.top(5)]
    rules.prune(keep=5)
    row = rules.row("a")
    assert len(row.scores) == 5
    assert [(item, row.scores[item] / row.total) for item in row.top(5)] == before
