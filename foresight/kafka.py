"""The Kafka client settings every Foresight producer shares."""

from __future__ import annotations

import logging
from typing import Any

from foresight.settings import Settings


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The producer settings every Foresight producer of a keyed topic uses."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.timeout.ms": 120_000,
        # librdkafka's own log lines go through logging instead of straight to stderr
        "logger": logging.getLogger("librdkafka"),
    }
    config.update(overrides)
    return config
