"""Foresight's shared kernel, its harness and its command line, in three layers.

- The kernel, imported by every stage: ``settings`` (the one settings object), ``ring`` (which
  cache node owns a client), ``membership``, ``tokens`` (agent tokens), ``kafka`` and
  ``cassandra`` (client helpers), ``topics`` and ``migrate`` (provisioning), ``logs`` and
  ``push_rule``.
- The harness, which runs the stages as processes and measures them: ``stack``, ``replay``,
  ``report`` and ``services`` (local Kafka and Cassandra).
- The composition root on top: ``cli`` (the ``foresight`` command) and ``__main__``.

Imports run only down this list (pyproject's [tool.importlinter], checked by ``make lint``).
"""
