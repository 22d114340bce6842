"""River's ``LogisticRegression.learn_one``, to the bit, without River's per-call objects.

The predictor teaches its two River logistic regressions about twenty examples per click (the
re-ranker the top candidates, the calibrator the top five). River's ``learn_one`` builds a
masked copy of the weights, a gradient vector and a scaled one for every example: 5 us for the
re-ranker's 17 features on this project's machine, a quarter of the worker's whole step. The
arithmetic itself is a dot product, a sigmoid and one multiply-subtract per feature.

:func:`learn_each` does that arithmetic for a model's examples, reading and writing the
model's own weights, intercept and iteration count, so River stays the model (its
``predict_proba_one``, its pickles in the worker's snapshots) and every float is the one
River's ``learn_one`` would give (``tests/unit/test_logistic.py`` holds it to that over
random examples). It does so only for what the predictor builds: plain SGD at a constant rate,
log loss with unit class weights, no L1 or L2 penalty and zero initial weights. Any other
model gets River's own ``learn_one``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from river import linear_model, optim
from river.optim.initializers import Zeros
from river.optim.losses import Log
from river.optim.schedulers import Constant

Example = tuple[dict[str, float], bool]


def learn_each(model: Any, examples: Iterable[Example]) -> None:
    """``model.learn_one(x, y)`` for each example in order, to the bit; fast when
    :func:`supported`: the weights are read into a dict once, updated there and written back
    in one call, so no River object is made per example."""
    if not supported(model):
        for x, y in examples:
            model.learn_one(x, y)
        return
    weights: dict[str, float] = model._weights.to_dict()  # River's VectorDict
    get = weights.get
    optimizer = model.optimizer
    lr = optimizer.lr.learning_rate
    intercept_lr = model.intercept_lr.learning_rate
    clip = model.clip_gradient
    intercept = model.intercept
    exp = math.exp
    steps = 0
    for x, y in examples:
        # River's dot product adds weight * value to 0.0 in x's order, then the intercept.
        dot = 0.0
        for name, value in x.items():
            dot += get(name, 0.0) * value
        raw = dot + intercept
        # Log loss's gradient (river.optim.losses.Log.gradient), weight 1, labels -1 and 1.
        sign = 1 if y else -1
        z = raw * sign
        if z > 18.0:
            gradient = 1.0 * exp(-z) * -sign
        elif z < -18.0:
            gradient = 1.0 * -sign
        else:
            gradient = 1.0 * -sign / (exp(z) + 1.0)
        gradient = float(max(min(gradient, clip), -clip))  # times the sample weight, 1
        intercept -= intercept_lr * gradient
        for name, value in x.items():
            weights[name] = get(name, 0.0) - (value * gradient) * lr
        steps += 1
    model._weights.update(weights)
    model.intercept = intercept
    optimizer.n_iterations += steps


def supported(model: Any) -> bool:
    """Whether :func:`learn_each`'s arithmetic is exactly the model's ``learn_one``."""
    if type(model) is not linear_model.LogisticRegression:
        return False
    loss = model.loss
    return (
        type(model.optimizer) is optim.SGD
        and type(model.optimizer.lr) is Constant
        and type(model.intercept_lr) is Constant
        and type(loss) is Log
        and loss.weight_pos == 1.0
        and loss.weight_neg == 1.0
        and model.l1 == 0.0
        and model.l2 == 0.0
        and type(model.initializer) is Zeros
    )
