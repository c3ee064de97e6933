"""Writing outbox events in the caller's SQLAlchemy unit of work.

An event is a row of the outbox table (sql/outbox.sql), added to the caller's session so that it
commits or rolls back with the business rows. outboxd reads committed rows from the WAL and
publishes them to Kafka; a rolled-back transaction never produces an event.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Union

from sqlalchemy import Column, DateTime, MetaData, Table, Text, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Session, registry, scoped_session

from outboxd.observability import current_trace_headers
from outboxd.payload import to_json_value

if TYPE_CHECKING:  # sqlalchemy.ext.asyncio needs greenlet at import: only for the types
    from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session

__all__ = [
    "EVENT_ID_NAMESPACE",
    "Outbox",
    "OutboxRow",
    "JsonDefault",
    "SessionLike",
    "canonical_key",
    "default_outbox",
    "emit",
    "event_id",
    "json_default",
]

#: The namespace of deterministic event ids: ``event_id()`` is
#: ``uuid5(EVENT_ID_NAMESPACE, aggregate_type + "\\0" + aggregate_id + "\\0" + event_type + "\\0" + dedupe_key)``
#: (UTF-8). Fixed forever: producers in other languages can compute the same ids.
EVENT_ID_NAMESPACE = uuid.UUID("411af42c-33d0-480d-abe7-f24705ec5d00")

#: A SQLAlchemy session, or a scoped session such as Flask-SQLAlchemy's ``db.session``, or an
#: ``AsyncSession``: ``emit()`` only calls ``add()``, which is synchronous on all of them.
SessionLike = Union[Session, "scoped_session[Any]", "AsyncSession", "async_scoped_session[Any]"]

#: A ``json.dumps`` ``default=`` hook: returns a JSON-serializable stand-in or raises TypeError.
JsonDefault = Callable[[Any], Any]


def json_default(value: Any) -> Any:
    """A ``json_default`` for ``emit()``: datetime, date and time as ISO 8601 text
    (``isoformat()``), Decimal as its exact decimal text (``str()``, never a float), UUID as its
    36-character lowercase text. Anything else raises TypeError, as ``json.dumps`` does."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} has no JSON representation")
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def canonical_key(value: object, name: str = "dedupe_key") -> str:
    """The text a dedupe key stands for in ``event_id()``, fixed so that other languages can
    compute the same ids: a ``str`` as is; an ``int`` in decimal (``42`` -> ``"42"``); a
    ``uuid.UUID`` as its 36-character lowercase text; a ``Decimal`` as ``str()``; a ``date`` or
    ``datetime`` as ``isoformat()``; a ``tuple`` of these as the compact JSON array of its parts'
    texts (``("o-1", 2)`` -> ``'["o-1","2"]'``). Other types (bool, float, None, objects whose
    ``str()`` may change between runs) raise TypeError: convert them to text yourself."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        raise TypeError(f"{name} must not be {value!r}: ambiguous as a key")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (uuid.UUID, Decimal)):
        return str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, tuple):
        return json.dumps([canonical_key(part, name) for part in value], ensure_ascii=False, separators=(",", ":"))
    raise TypeError(f"{name} must be str, int, UUID, Decimal, date, datetime or a tuple of these, "
                    f"got {type(value).__name__}")


def event_id(aggregate_type: str, aggregate_id: object, event_type: str, dedupe_key: object) -> uuid.UUID:
    """Returns the deterministic id of an event, derived from its natural key.

    A producer that retries (a re-sent HTTP request, a re-run batch) passes the same natural key
    and so writes the same id: a second insert fails on the outbox primary key instead of
    publishing the event twice, and consumers de-duplicate by that id in any case.

    The four parts are joined with NUL characters, which PostgreSQL text cannot contain, so two
    different keys never give the same name. ``aggregate_id`` is taken as its ``str()`` (as
    ``emit()`` stores it), ``dedupe_key`` as ``canonical_key(dedupe_key)``.
    """
    parts = (_text("aggregate_type", aggregate_type), _text("aggregate_id", _aggregate_id(aggregate_id)),
             _text("event_type", event_type), _text("dedupe_key", canonical_key(dedupe_key)))
    return uuid.uuid5(EVENT_ID_NAMESPACE, "\0".join(parts))


def _aggregate_id(value: object) -> str:
    if value is None:
        # The usual cause: an autoincrement primary key read before the INSERT ran.
        raise ValueError("aggregate_id must not be None; for an id the database assigns, call "
                         "session.flush() after session.add(...) and before reading it")
    return value if isinstance(value, str) else str(value)


def _payload(payload: object, default: JsonDefault | None) -> Any:
    """The payload as the JSON values it will be stored as; raises now what jsonb would refuse at commit."""
    payload = to_json_value(payload)
    if payload is None:
        raise ValueError("emit: payload must not be None (the column is NOT NULL); pass {} for an empty body")
    try:
        # allow_nan=False: jsonb has no NaN or Infinity.
        encoded = json.dumps(payload, default=default, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"emit: payload is not JSON-serializable ({e}); convert it, or pass "
                        f"json_default=outboxd.json_default for datetime, Decimal and UUID") from e
    # The stored value is what was just checked: the session's JSON serializer sees only plain
    # JSON types, and a later change to the caller's objects does not change the event.
    value = json.loads(encoded)
    if "\\u0000" in encoded and _has_nul(value):  # the cheap test first: NUL is rare
        raise ValueError("emit: payload text must not contain NUL characters (jsonb cannot store them)")
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    if "\0" in value:
        raise ValueError(f"{name} must not contain NUL characters (PostgreSQL text cannot store them)")
    return value


class OutboxRow:
    """One outbox row. Mapped to a table by ``Outbox``; do not instantiate it directly."""

    id: uuid.UUID
    aggregate_type: str
    aggregate_id: str
    event_type: str
    payload: Any
    headers: dict[str, str] | None
    destination: str | None
    created_at: datetime

    def __init__(self, **values: Any) -> None:
        for key, value in values.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} id={self.id} {self.aggregate_type}/{self.aggregate_id} "
                f"{self.event_type}>")


_registry = registry()
_models: dict[tuple[str, str], type[OutboxRow]] = {}
_models_lock = threading.Lock()


def outbox_table(metadata: MetaData, name: str = "outbox", schema: str = "public") -> Table:
    """The outbox table as sql/outbox.sql defines it, as a SQLAlchemy ``Table`` in ``metadata``."""
    return Table(
        name,
        metadata,
        Column("id", UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()),
        Column("aggregate_type", Text, nullable=False),
        Column("aggregate_id", Text, nullable=False),
        Column("event_type", Text, nullable=False),
        Column("payload", JSONB(none_as_null=True), nullable=False),
        Column("headers", JSONB(none_as_null=True)),
        Column("destination", Text),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        schema=schema,
    )


class Outbox:
    """An outbox table (by default ``public.outbox``) that events are written to.

    The row class is mapped in a registry of its own, so it does not mix with the application's
    declarative models; a session bound to the application's engine writes it like any model.
    """

    def __init__(self, table: str = "outbox", schema: str = "public", *,
                 json_default: JsonDefault | None = None, trace_context: bool = True) -> None:
        self.name = _text("table", table)
        self.schema = _text("schema", schema)
        #: The ``json.dumps`` ``default=`` hook for payloads emitted here (``emit()`` may override it).
        self.json_default = json_default
        #: Whether ``emit()`` adds the current OpenTelemetry span's ``traceparent`` (when installed).
        self.trace_context = trace_context
        key = (self.schema, self.name)
        with _models_lock:
            model = _models.get(key)
            if model is None:
                table_obj = outbox_table(_registry.metadata, self.name, self.schema)
                model = type(f"OutboxRow_{self.schema}_{self.name}", (OutboxRow,), {})
                _registry.map_imperatively(model, table_obj)
                _models[key] = model
        #: The mapped row class.
        self.model: type[OutboxRow] = model
        #: The SQLAlchemy Core table.
        self.table: Table = model.__table__  # type: ignore[attr-defined]

    @property
    def qualified_name(self) -> str:
        """``schema.table``, as outboxd's ``[[outbox]] table`` key spells it."""
        return f"{self.schema}.{self.name}"

    def emit(
        self,
        session: SessionLike,
        aggregate_type: str,
        aggregate_id: object,
        event_type: str,
        payload: object,
        headers: Mapping[str, str] | None = None,
        *,
        id: uuid.UUID | None = None,
        dedupe_key: object = None,
        destination: str | None = None,
        json_default: JsonDefault | None = None,
    ) -> uuid.UUID:
        """Adds an event to ``session`` and returns its id. See ``outboxd.emit``."""
        if id is not None and dedupe_key is not None:
            raise ValueError("emit: pass either id or dedupe_key, not both (dedupe_key derives the id)")
        aggregate_type = _text("aggregate_type", aggregate_type)
        aggregate_id = _text("aggregate_id", _aggregate_id(aggregate_id))
        event_type = _text("event_type", event_type)
        payload = _payload(payload, json_default or self.json_default)
        if headers is not None:
            headers = dict(headers)
            for name, value in headers.items():
                if not isinstance(name, str) or not isinstance(value, str):
                    raise TypeError(f"emit: headers must map str to str, got {name!r}: {value!r}")
        if self.trace_context and (headers is None or "traceparent" not in headers):
            trace = current_trace_headers()  # {} without OpenTelemetry or outside a span
            if trace:
                headers = {**trace, **(headers or {})}
        if destination is not None:
            destination = _text("destination", destination)
        if dedupe_key is not None:
            event = event_id(aggregate_type, aggregate_id, event_type, dedupe_key)
        elif id is not None:
            if not isinstance(id, uuid.UUID):
                raise TypeError(f"emit: id must be a uuid.UUID, got {type(id).__name__}")
            event = id
        else:
            event = uuid.uuid4()
        row = self.model(
            id=event,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            event_type=event_type,
            payload=payload,
            headers=headers or None,
            destination=destination,
        )
        # add() only: the session's unit of work inserts the row at its next flush, inside the
        # caller's transaction, and commits or rolls it back with everything else.
        session.add(row)
        return event


#: The outbox ``emit()`` writes to unless told otherwise: ``public.outbox``.
default_outbox = Outbox()


def emit(
    session: SessionLike,
    aggregate_type: str,
    aggregate_id: object,
    event_type: str,
    payload: object,
    headers: Mapping[str, str] | None = None,
    *,
    id: uuid.UUID | None = None,
    dedupe_key: object = None,
    destination: str | None = None,
    outbox: Outbox | None = None,
    json_default: JsonDefault | None = None,
) -> uuid.UUID:
    """Adds an outbox event to the caller's session; returns the event id (the Kafka key).

    The row is added to ``session`` (a SQLAlchemy 2.x ``Session``, or a scoped session such as
    Flask-SQLAlchemy's ``db.session``, or an ``AsyncSession``) and never flushed or committed
    here: it is inserted at the session's next flush and is published only if the caller's
    transaction commits. Everything is checked here, at the call, not at the commit.

    Args:
        session: the session holding the business change.
        aggregate_type: e.g. ``"order"``; outboxd's default topic is
            ``outbox.event.{aggregate_type}``.
        aggregate_id: e.g. the order id (anything but None, stored as its ``str()``). An
            autoincrement id is None until the INSERT: ``session.flush()`` first.
        event_type: e.g. ``"OrderCreated"``.
        payload: the event body, a JSON-serializable value, a dataclass instance
            (``dataclasses.asdict``) or a pydantic model (``model_dump(mode="json")``), stored as
            jsonb: serialized here with ``json.dumps(payload, default=json_default,
            allow_nan=False)``, so that what jsonb would refuse raises now. The stored value is
            that JSON (a copy). Consumers read it back with ``event.payload_as(Model)``.
        headers: extra Kafka headers. With opentelemetry-api installed and a span current (the
            server span of the request, under an instrumented web framework), its W3C
            ``traceparent`` (and ``tracestate``) are added unless ``headers`` has a traceparent;
            ``Outbox(trace_context=False)`` turns that off.
        id: an explicit event id.
        dedupe_key: a natural key (e.g. the client's request id) for producers that retry: the
            id becomes ``event_id(aggregate_type, aggregate_id, event_type, dedupe_key)``, the
            same on every retry: a str, int, UUID, Decimal, date/datetime or a tuple of these,
            in the text form of ``canonical_key()``. Exclusive with ``id``. Without either, a
            random uuid4.
        destination: the topic for a table configured with ``topic = "{destination}"``.
        outbox: the outbox table; ``default_outbox`` (``public.outbox``) by default.
        json_default: the ``json.dumps`` ``default=`` hook for values JSON lacks, e.g.
            ``outboxd.json_default`` (datetime/date/time -> ISO 8601, Decimal -> exact text,
            UUID -> text); by default the outbox's (``Outbox(json_default=...)``), else none:
            such values raise TypeError.

    Raises:
        ValueError, TypeError: an argument that the table would refuse.
    """
    return (outbox or default_outbox).emit(
        session, aggregate_type, aggregate_id, event_type, payload, headers,
        id=id, dedupe_key=dedupe_key, destination=destination, json_default=json_default,
    )
