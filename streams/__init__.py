"""The stream worker: the Faust app that learns each client's next click and plans prefetches.

``app`` is the thin Faust shell (``foresight worker``) over a pure engine: ``engine`` scores,
learns, predicts and plans one event; ``predictor``, ``signals``, ``ranking``, ``logistic`` and
``client_state`` are the model, ``planner`` turns predictions into prefetch commands, ``guard``
keeps scrapers out. ``evaluation``, ``baselines`` and ``simulate`` measure predictors offline.
"""
