"""Optional OpenTelemetry tracing and Prometheus counters; without those packages, nothing changes.

Tracing (``opentelemetry-api`` installed): ``emit()`` writes the current span's context as the
W3C ``traceparent`` (and ``tracestate``) header unless the caller passes one, and the consumer
runs each handler in a ``process <topic>`` span of kind CONSUMER, linked to the producer's
context from that header.

Counters (``prometheus_client`` installed), per consumer group, in the default registry unless
the consumer is given another:

    outboxd_consumer_records_total{group, outcome}      processed, duplicate, undecodable, dead_lettered
    outboxd_consumer_handler_reruns_total{group}        a handler run again for an event (after a failure)
    outboxd_consumer_failures_total{group, stage}       handler, after_commit (each failed attempt)
    outboxd_consumer_after_commit_calls_total{group}    after_commit callbacks run
    outboxd_consumer_offset_commits_total{group, result}  ok, error
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from outboxd.envelope import Event

__all__ = ["Instruments", "current_trace_headers", "tracing_available"]

try:
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator as _Propagator

    _propagator: Any = _Propagator()
except ImportError:  # pragma: no cover - exercised in the no-extras check
    _trace = None  # type: ignore[assignment]
    _propagator = None

try:
    import prometheus_client as _prometheus
except ImportError:  # pragma: no cover - exercised in the no-extras check
    _prometheus = None  # type: ignore[assignment]


def tracing_available() -> bool:
    return _trace is not None


def current_trace_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span, or {} without one (or without OpenTelemetry)."""
    if _propagator is None:
        return {}
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


_counters: dict[int, dict[str, Any]] = {}
_counters_lock = threading.Lock()


def _prometheus_counters(registry: Any) -> dict[str, Any]:
    """One set of counters per registry (a name may be registered once per registry)."""
    assert _prometheus is not None
    registry = registry if registry is not None else _prometheus.REGISTRY
    with _counters_lock:
        counters = _counters.get(id(registry))
        if counters is None:
            c = _prometheus.Counter
            counters = _counters[id(registry)] = {
                "records": c("outboxd_consumer_records", "Records handled by outboxd's IdempotentConsumer, by outcome",
                             ["group", "outcome"], registry=registry),
                "reruns": c("outboxd_consumer_handler_reruns", "Handler runs for an event whose handler had already "
                            "run without its transaction committing", ["group"], registry=registry),
                "failures": c("outboxd_consumer_failures", "Failed attempts, by stage (handler, after_commit)",
                              ["group", "stage"], registry=registry),
                "after_commit": c("outboxd_consumer_after_commit_calls", "after_commit callbacks run",
                                  ["group"], registry=registry),
                "offset_commits": c("outboxd_consumer_offset_commits", "Kafka offset commits, by result",
                                    ["group", "result"], registry=registry),
            }
        return counters


class Instruments:
    """What a consumer reports to: an OpenTelemetry tracer and Prometheus counters, each when installed."""

    def __init__(self, group: str, *, tracer_provider: Any = None, prometheus_registry: Any = None,
                 metrics: bool = True) -> None:
        self.group = group
        self.tracer: Any = None
        self._provider = tracer_provider
        if _trace is not None:
            self.tracer = _trace.get_tracer("outboxd.consumer", tracer_provider=tracer_provider)
        self._counters = _prometheus_counters(prometheus_registry) if metrics and _prometheus is not None else None

    def tracing(self) -> bool:
        """Whether spans would be recorded: OpenTelemetry is installed and a provider (given, or the
        global one) is configured. Without one, spans are skipped rather than made as no-ops."""
        if self.tracer is None or _trace is None:
            return False
        provider = self._provider if self._provider is not None else _trace.get_tracer_provider()
        return not isinstance(provider, (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider))

    def count(self, name: str, amount: int = 1, **labels: str) -> None:
        if self._counters is not None and amount:
            self._counters[name].labels(group=self.group, **labels).inc(amount)

    @contextmanager
    def consumer_span(self, event: Event, group: str) -> Iterator[None]:
        assert _trace is not None and self.tracer is not None
        links = []
        traceparent = event.header("traceparent")
        if traceparent is not None and _propagator is not None:
            carrier: MutableMapping[str, str] = {"traceparent": traceparent}
            state = event.header("tracestate")
            if state is not None:
                carrier["tracestate"] = state
            remote = _trace.get_current_span(_propagator.extract(carrier)).get_span_context()
            if remote.is_valid:
                links.append(_trace.Link(remote))
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": event.topic,
            "messaging.destination.partition.id": str(event.partition),
            "messaging.kafka.offset": event.offset,
            "messaging.message.id": str(event.id),
            "messaging.consumer.group.name": group,
            "outboxd.event_type": event.event_type,
            "outboxd.aggregate_type": event.aggregate_type,
        }
        with self.tracer.start_as_current_span(f"process {event.topic}", kind=_trace.SpanKind.CONSUMER,
                                               links=links, attributes=attributes):
            yield
