"""A Faust Kafka transport whose consumer does not sit on a fetch for 1.5 s.

faust-streaming's aiokafka driver builds its consumer with ``fetch_max_wait_ms=1500`` and no
setting to change it. aiokafka leaves a partition out of the next fetch request while its
records wait in the buffer, and sends that request only when the one in flight returns, which
on a quiet topic is after the broker's full wait. A click that lands just after such a request
left then waits up to 1.5 s before the worker even sees it (measured in bench/e2e.py:
click-to-command p50 1,285 ms at 200 clicks/s). This transport keeps every other default and
makes that wait a setting (FORESIGHT_WORKER_FETCH_MAX_WAIT_MS).

It also asks the broker for at least ``fetch_min_bytes`` per fetch (within that wait): under
load a fetch returning each record as it lands costs a request, a response and their socket
writes per handful of records, which took a tenth of the worker in a replay.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver


def transport_for(fetch_max_wait_ms: int, fetch_min_bytes: int = 1) -> type[driver.Transport]:
    """The aiokafka transport class with its consumer's fetch wait set to ``fetch_max_wait_ms``
    and the bytes a fetch waits for (at most that long) to ``fetch_min_bytes``."""

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read when the fetcher starts
            consumer._fetch_min_bytes = fetch_min_bytes
            return consumer

    class FastConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):
        Consumer = FastConsumer

    return Transport


class App(faust.App):
    """A Faust app on :func:`transport_for`'s transport."""

    fetch_max_wait_ms: int = 1500
    fetch_min_bytes: int = 1

    def _new_transport(self) -> Any:
        transport = transport_for(self.fetch_max_wait_ms, self.fetch_min_bytes)
        return transport(self.conf.broker_consumer, self)
