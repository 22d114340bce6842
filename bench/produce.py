"""Publishing rate: the Foresight publisher (with validation) against a bare confluent-kafka loop.

Both send the same real yoochoose events, as the JSON lines a producer would read, to the same
broker in the same run, with the same producer settings (idempotent, acks=all, murmur2, lz4).
The bare loop sends the bytes as they are, one produce() call each; the publisher parses and
validates each one as an Interaction, encodes it and sends it keyed by client, in batches of
1000 as `foresight produce` does. Rounds alternate, the median is reported.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from foresight.kafka import producer_config
from foresight.settings import Settings
from producers.datasets import read_yoochoose
from producers.publisher import InteractionPublisher
from schemas import encode

BATCH = 1000  # records per publish_batch call, as `foresight produce` sends them
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "yoochoose-100k"


def load_lines(n: int) -> list[tuple[bytes, bytes]]:
    """(key, JSON line) pairs of real events, repeated to n."""
    events = list(read_yoochoose(DATA / "train_full.tsv"))
    cycled = itertools.islice(itertools.cycle(events), n)
    return [(e.client_id.encode(), encode(e)) for e in cycled]


def bare_loop(settings: Settings, topic: str, lines: list[tuple[bytes, bytes]]) -> float:
    producer = Producer(producer_config(settings))
    start = time.perf_counter()
    for key, value in lines:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    producer.flush(120)
    return len(lines) / (time.perf_counter() - start)


def foresight_publisher(settings: Settings, topic: str, lines: list[tuple[bytes, bytes]]) -> float:
    publisher = InteractionPublisher(settings, topic=topic, source="bench")
    values = [value for _key, value in lines]
    start = time.perf_counter()
    for i in range(0, len(values), BATCH):
        publisher.publish_batch(values[i : i + BATCH])
    publisher.close(120)
    elapsed = time.perf_counter() - start
    assert publisher.counts.rejected == 0 and publisher.counts.delivered == len(lines)
    return len(lines) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = Settings()
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    topic = f"bench-produce-{uuid.uuid4().hex[:8]}"
    admin.create_topics(
        [NewTopic(topic, num_partitions=settings.interactions_partitions, replication_factor=1)]
    )[topic].result(30)
    try:
        lines = load_lines(args.events)
        bare: list[float] = []
        mine: list[float] = []
        for round_no in range(args.rounds):
            # Alternate which runs first, so neither always meets a warmer broker.
            if round_no % 2 == 0:
                bare.append(bare_loop(settings, topic, lines))
                mine.append(foresight_publisher(settings, topic, lines))
            else:
                mine.append(foresight_publisher(settings, topic, lines))
                bare.append(bare_loop(settings, topic, lines))
    finally:
        admin.delete_topics([topic])[topic].result(30)
    bare_rate, mine_rate = statistics.median(bare), statistics.median(mine)
    print(
        json.dumps(
            {
                "bench": "produce",
                "events_per_round": args.events,
                "rounds": args.rounds,
                "foresight_publisher_events_per_s": round(mine_rate),
                "bare_confluent_kafka_events_per_s": round(bare_rate),
                "ratio": round(mine_rate / bare_rate, 3),
                "bar": 0.7,
                "rounds_events_per_s": {
                    "foresight": [round(r) for r in mine],
                    "bare": [round(r) for r in bare],
                },
            }
        )
    )


if __name__ == "__main__":
    main()
