"""streams.logistic teaches River's logistic regressions exactly as River's learn_one does."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from river import linear_model, optim

from streams.logistic import learn_each, supported

NAMES = [f"f{i}" for i in range(20)]
values = st.one_of(
    st.floats(-50, 50, allow_nan=False), st.just(1.0), st.just(0.0), st.just(-6.907755278982137)
)
example = st.tuples(st.dictionaries(st.sampled_from(NAMES), values, min_size=1), st.booleans())


def ranker() -> Any:  # as streams.signals builds them
    return linear_model.LogisticRegression(optimizer=optim.SGD(0.01), intercept_lr=0.01)


def calibrator() -> Any:
    return linear_model.LogisticRegression(optimizer=optim.SGD(0.02))


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(st.lists(example, max_size=20), max_size=8), which=st.booleans())
def test_weights_intercept_and_steps_are_rivers_to_the_bit(
    batches: list[list[tuple[dict[str, float], bool]]], which: bool
) -> None:
    make = ranker if which else calibrator
    river, ours = make(), make()
    for batch in batches:
        for x, y in batch:
            river.learn_one(x, y)
        learn_each(ours, batch)
        assert ours.weights == river.weights
        assert ours.intercept == river.intercept
    assert ours.optimizer.n_iterations == river.optimizer.n_iterations
    probe = {name: 1.0 for name in NAMES}
    assert ours.predict_proba_one(probe) == river.predict_proba_one(probe)


def test_a_model_it_cannot_follow_learns_through_river() -> None:
    """An L2 penalty (or another optimizer or loss) is not this module's arithmetic: River's
    own learn_one runs, and the result is still River's."""

    def make() -> Any:
        return linear_model.LogisticRegression(optimizer=optim.SGD(0.01), l2=0.1)

    river, ours = make(), make()
    assert not supported(ours)
    assert supported(ranker()) and supported(calibrator())
    batch = [({"a": 2.0, "b": -1.0}, True), ({"a": 0.5}, False)] * 10
    for x, y in batch:
        river.learn_one(x, y)
    learn_each(ours, batch)
    assert ours.weights == river.weights and ours.intercept == river.intercept
    assert ours.weights["a"] != 0.0
