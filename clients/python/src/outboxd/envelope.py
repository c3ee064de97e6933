"""Decoding outboxd's Kafka records: the ``outbox.v1.Envelope`` Protobuf value.

``Envelope`` is generated from proto/outbox/v1/envelope.proto when the package is built.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from google.protobuf.message import DecodeError

from outboxd.envelope_pb2 import Envelope, Header, Source
from outboxd.payload import from_payload

T = TypeVar("T")

__all__ = ["DecodeError", "Envelope", "Event", "Header", "Source", "UndecodableRecord", "decode"]


class UndecodableRecord(ValueError):
    """A Kafka record whose value is not a valid outboxd envelope."""


@dataclass(frozen=True)
class Event:
    """One outbox event, as read from Kafka.

    ``id`` is the outbox row's UUID: the same for every duplicate of the event, so it is the
    de-duplication key. ``payload`` holds the bytes as stored (JSON text for a jsonb column);
    ``json()`` parses it.
    """

    id: uuid.UUID
    aggregate_type: str
    aggregate_id: str
    event_type: str
    payload: bytes
    content_type: str
    headers: tuple[tuple[str, bytes], ...]
    created_at: datetime | None
    envelope: Envelope = field(repr=False, compare=False)
    topic: str = ""
    partition: int = -1
    offset: int = -1

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)

    def payload_as(self, model: type[T]) -> T:
        """The payload as an instance of ``model``, a dataclass or a pydantic model (see
        ``outboxd.payload``); raises ``outboxd.PayloadError`` when it does not fit."""
        return from_payload(model, self.payload)

    def header(self, name: str) -> str | None:
        """The first row header called ``name``, as text, or None."""
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", errors="replace")
        return None


def decode(value: bytes | None, *, topic: str = "", partition: int = -1, offset: int = -1) -> Event:
    """Decodes a record value produced by outboxd.

    Raises:
        UndecodableRecord: the value is missing, not an envelope, or its id is not a UUID.
    """
    where = f"{topic}[{partition}]@{offset}" if topic else "record"
    if value is None:
        raise UndecodableRecord(f"{where}: no value (a tombstone?), not an outboxd envelope")
    envelope = Envelope()
    try:
        envelope.ParseFromString(value)
    except DecodeError as e:
        raise UndecodableRecord(f"{where}: not an outbox.v1.Envelope: {e}") from e
    try:
        event_id = uuid.UUID(envelope.id)
    except ValueError as e:
        raise UndecodableRecord(f"{where}: envelope id {envelope.id!r} is not a UUID") from e
    created_at = None
    if envelope.HasField("created_at"):
        created_at = envelope.created_at.ToDatetime(tzinfo=timezone.utc)
    return Event(
        id=event_id,
        aggregate_type=envelope.aggregate_type,
        aggregate_id=envelope.aggregate_id,
        event_type=envelope.event_type,
        payload=envelope.payload,
        content_type=envelope.content_type,
        headers=tuple((h.key, h.value) for h in envelope.headers),
        created_at=created_at,
        envelope=envelope,
        topic=topic,
        partition=partition,
        offset=offset,
    )
