"""Writing outbox events in the caller's SQLAlchemy unit of work.

An event is a row of the outbox table (sql/outbox.sql), added to the caller's session so that it
commits or rolls back with the business rows. outboxd reads committed rows from the WAL and
publishes them to Kafka; a rolled-back transaction never produces an event.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Union

from sqlalchemy import Column, DateTime, MetaData, Table, Text, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Session, registry, scoped_session

__all__ = [
    "EVENT_ID_NAMESPACE",
    "Outbox",
    "OutboxRow",
    "SessionLike",
    "default_outbox",
    "emit",
    "event_id",
]

#: The namespace of deterministic event ids: ``event_id()`` is
#: ``uuid5(EVENT_ID_NAMESPACE, aggregate_type + "\\0" + aggregate_id + "\\0" + event_type + "\\0" + dedupe_key)``
#: (UTF-8). Fixed forever: producers in other languages can compute the same ids.
EVENT_ID_NAMESPACE = uuid.UUID("411af42c-33d0-480d-abe7-f24705ec5d00")

#: A SQLAlchemy session, or a scoped session such as Flask-SQLAlchemy's ``db.session``.
SessionLike = Union[Session, "scoped_session[Any]"]


def event_id(aggregate_type: str, aggregate_id: object, event_type: str, dedupe_key: str) -> uuid.UUID:
    """Returns the deterministic id of an event, derived from its natural key.

    A producer that retries (a re-sent HTTP request, a re-run batch) passes the same natural key
    and so writes the same id: a second insert fails on the outbox primary key instead of
    publishing the event twice, and consumers de-duplicate by that id in any case.

    The four parts are joined with NUL characters, which PostgreSQL text cannot contain, so two
    different keys never give the same name.
    """
    parts = (_text("aggregate_type", aggregate_type), _text("aggregate_id", str(aggregate_id)),
             _text("event_type", event_type), _text("dedupe_key", dedupe_key))
    return uuid.uuid5(EVENT_ID_NAMESPACE, "\0".join(parts))


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

    def __init__(self, table: str = "outbox", schema: str = "public") -> None:
        self.name = _text("table", table)
        self.schema = _text("schema", schema)
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
        payload: Any,
        headers: Mapping[str, str] | None = None,
        *,
        id: uuid.UUID | None = None,
        dedupe_key: str | None = None,
        destination: str | None = None,
    ) -> uuid.UUID:
        """Adds an event to ``session`` and returns its id. See ``outboxd.emit``."""
        if id is not None and dedupe_key is not None:
            raise ValueError("emit: pass either id or dedupe_key, not both (dedupe_key derives the id)")
        aggregate_type = _text("aggregate_type", aggregate_type)
        aggregate_id = _text("aggregate_id", aggregate_id if isinstance(aggregate_id, str) else str(aggregate_id))
        event_type = _text("event_type", event_type)
        if payload is None:
            raise ValueError("emit: payload must not be None (the column is NOT NULL); pass {} for an empty body")
        if headers is not None:
            headers = dict(headers)
            for name, value in headers.items():
                if not isinstance(name, str) or not isinstance(value, str):
                    raise TypeError(f"emit: headers must map str to str, got {name!r}: {value!r}")
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
    payload: Any,
    headers: Mapping[str, str] | None = None,
    *,
    id: uuid.UUID | None = None,
    dedupe_key: str | None = None,
    destination: str | None = None,
    outbox: Outbox | None = None,
) -> uuid.UUID:
    """Adds an outbox event to the caller's session; returns the event id (the Kafka key).

    The row is added to ``session`` (a SQLAlchemy 2.x ``Session``, or a scoped session such as
    Flask-SQLAlchemy's ``db.session``) and never flushed or committed here: it is inserted at
    the session's next flush and is published only if the caller's transaction commits.

    Args:
        session: the session holding the business change.
        aggregate_type: e.g. ``"order"``; outboxd's default topic is
            ``outbox.event.{aggregate_type}``.
        aggregate_id: e.g. the order id (anything, stored as its ``str()``).
        event_type: e.g. ``"OrderCreated"``.
        payload: the event body, any JSON-serializable value (stored as jsonb).
        headers: extra Kafka headers, e.g. ``{"traceparent": "..."}``.
        id: an explicit event id.
        dedupe_key: a natural key (e.g. the client's request id) for producers that retry: the
            id becomes ``event_id(aggregate_type, aggregate_id, event_type, dedupe_key)``, the
            same on every retry. Exclusive with ``id``. Without either, a random uuid4.
        destination: the topic for a table configured with ``topic = "{destination}"``.
        outbox: the outbox table; ``default_outbox`` (``public.outbox``) by default.

    Raises:
        ValueError, TypeError: an argument that the table would refuse.
    """
    return (outbox or default_outbox).emit(
        session, aggregate_type, aggregate_id, event_type, payload, headers,
        id=id, dedupe_key=dedupe_key, destination=destination,
    )
