"""The dead-letter producer of ``IdempotentConsumer``: the consumer's own client settings, acks=all.

It inherits every property of the consumer's configuration (``bootstrap.servers``,
``security.protocol``, ``sasl.*``, ``ssl.*``, ``client.id``, ``oauth_cb``, ``error_cb``, ``logger``, ...)
except those that only a consumer has (librdkafka's CONFIGURATION.md marks them "C"), so that a
dead letter reaches the cluster the records came from, on a SASL or TLS listener too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

__all__ = ["DeadLetterProducer", "producer_config"]

# Consumer-only properties (librdkafka CONFIGURATION.md, column C/P = "C"), and confluent-kafka's
# consumer-only Python callbacks.
_CONSUMER_ONLY = frozenset({
    "group.id", "group.instance.id", "partition.assignment.strategy", "session.timeout.ms",
    "heartbeat.interval.ms", "group.protocol.type", "group.protocol", "group.remote.assignor",
    "coordinator.query.interval.ms", "max.poll.interval.ms", "enable.auto.commit", "auto.commit.interval.ms",
    "enable.auto.offset.store", "queued.min.messages", "queued.max.messages.kbytes", "fetch.wait.max.ms",
    "fetch.queue.backoff.ms", "fetch.message.max.bytes", "max.partition.fetch.bytes", "fetch.max.bytes",
    "fetch.min.bytes", "fetch.error.backoff.ms", "offset.store.method", "isolation.level", "consume_cb",
    "rebalance_cb", "offset_commit_cb", "enable.partition.eof", "check.crcs", "auto.offset.reset",
    "auto.commit.enable", "offset.store.path", "offset.store.sync.interval.ms", "consume.callback.max.messages",
    "on_commit", "allow.auto.create.topics",
})


def producer_config(consumer_config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The dead-letter producer's properties: the consumer's minus consumer-only ones, ``acks=all``
    and idempotence on, ``client.id`` suffixed ``-dead-letter``, then ``overrides``."""
    config = {k: v for k, v in consumer_config.items() if k not in _CONSUMER_ONLY}
    config["acks"] = "all"
    config["enable.idempotence"] = True
    if "client.id" in config:
        config["client.id"] = f"{config['client.id']}-dead-letter"
    config.update(overrides or {})
    return config


Headers = Sequence[tuple[str, "str | bytes | None"]]


class DeadLetterProducer:
    """Copies records to a dead-letter topic and waits for Kafka's acknowledgement."""

    def __init__(self, config: Mapping[str, Any], timeout: float = 30.0) -> None:
        self._config = dict(config)
        self._timeout = timeout
        self._producer: Producer | None = None

    def send(self, topic: str, msg: Message, headers: Headers) -> None:
        """Produces ``msg``'s key and value with its headers plus ``headers``; raises KafkaException
        if Kafka does not acknowledge within the timeout."""
        if self._producer is None:
            self._producer = Producer(self._config)
        original = msg.headers() or []  # a consumed message has a list; the type also allows a dict
        all_headers: list[tuple[str, str | bytes | None]] = (
            list(original.items()) if isinstance(original, dict) else list(original))
        all_headers += list(headers)
        delivered: list[KafkaError | None] = []
        self._producer.produce(topic, value=msg.value(), key=msg.key(), headers=all_headers,
                               on_delivery=lambda err, _msg: delivered.append(err))
        deadline = time.monotonic() + self._timeout
        while not delivered and time.monotonic() < deadline:
            self._producer.poll(0.1)
        if not delivered:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"dead letter to {topic} not acknowledged within "
                                                                   f"{self._timeout:.0f} s"))
        if delivered[0] is not None:
            raise KafkaException(delivered[0])

    def flush(self, timeout: float) -> int:
        return self._producer.flush(timeout) if self._producer is not None else 0
