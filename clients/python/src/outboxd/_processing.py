"""The transaction semantics of consuming outboxd events, apart from Kafka.

``Processor.process(events)`` is what ``IdempotentConsumer`` (Kafka) and
``outboxd.testing.FakeConsumer`` (in memory) both call with the decoded events of a poll. One
database transaction per call:

1. one multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` claims the event ids in
   processed_events (an id already there, or earlier in the same call, is a duplicate);
2. each claimed event's handler runs in a SAVEPOINT of its own: the handler's session is joined to
   the batch's connection with ``join_transaction_mode="create_savepoint"``, so its transaction
   is a SAVEPOINT, begun only once the handler touches the session (a handler that does not costs
   nothing) and committed (flushed, released) when the handler returns. A failed flush inside the
   handler rolls back that savepoint, never the batch;
3. a handler that raises rolls back to its savepoint only: the events before it stay, their
   handlers are not run again; the claims of it and of the events after it are deleted, and the
   transaction commits the prefix. The result names the failing event (``Failure``);
4. ``after_commit`` registrations are stored in the claimed rows (column after_commit, jsonb), in
   the same transaction, then run once it committed, then cleared. A crash in between leaves them
   stored: the redelivered record is a duplicate whose stored callbacks are run then (at least
   once; the window of possible repeats is the callbacks that ran but were not yet cleared).

When the COMMIT itself fails (a deferred constraint, a serialization failure, a lost connection),
no single handler is to blame and nothing was kept: the events are processed again one per
transaction, which re-runs their handlers (counted in ``handler_reruns``; unavoidable, their
effects did not commit), to find the event that fails.
"""

from __future__ import annotations

import enum
import importlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from sqlalchemy import (JSON, BigInteger, Column, Connection, DateTime, Engine, Integer, MetaData, Table, Text, Uuid,
                        bindparam, delete, func, select, text, update)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from outboxd.envelope import Event
from outboxd.schema import quote_ident

if TYPE_CHECKING:
    from outboxd.observability import Instruments

__all__ = [
    "AfterCommit",
    "Failure",
    "Handler",
    "Outcome",
    "Processor",
    "Result",
    "SchemaError",
    "SessionFactory",
    "after_commit",
    "is_transient",
    "processed_events_table",
]

log = logging.getLogger("outboxd.consumer")

#: ``handler(session, event)``: runs inside the transaction; must not commit or roll back.
Handler = Callable[[Session, Event], None]
#: A ``sessionmaker`` (or any callable taking Session's keyword arguments: the consumer passes
#: ``bind`` and ``join_transaction_mode``), or an ``Engine`` to make sessions for.
SessionFactory = Union[Callable[..., Session], Engine]

_REGISTRATIONS = "outboxd.after_commit"  # key in Session.info while a handler runs


class Outcome(enum.Enum):
    """What the consumer did with a record."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    UNDECODABLE = "undecodable"      # not an envelope: routed (dead-letter topic / on_undecodable), skipped
    DEAD_LETTERED = "dead_lettered"  # failed max_attempts times: copied to the dead-letter topic, skipped


class SchemaError(RuntimeError):
    """processed_events lacks what the consumer needs (e.g. the after_commit column): retried, never
    dead-lettered; fix the schema (``create_schema()`` or a migration running
    ``upgrade_processed_events()``)."""


def processed_events_table(metadata: MetaData, name: str = "processed_events", schema: str | None = "public") -> Table:
    """The processed_events table (see ``outboxd.schema.processed_events_ddl``) as a SQLAlchemy Table.

    Generic types (``Uuid``, ``JSON``): on PostgreSQL the same table as the DDL; on SQLite a table
    that ``metadata.create_all()`` can make for unit tests (``FakeConsumer``).
    """
    return Table(
        name,
        metadata,
        Column("consumer_group", Text, primary_key=True),
        Column("event_id", Uuid(as_uuid=True), primary_key=True),
        Column("kafka_topic", Text, nullable=False),
        Column("kafka_partition", Integer, nullable=False),
        Column("kafka_offset", BigInteger, nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("after_commit", JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True),
                                                                   "postgresql")),
        schema=schema,
    )


# -- after_commit ------------------------------------------------------------------------------

@dataclass(frozen=True)
class AfterCommit:
    """One registered callback: ``path`` (``module:qualname``) is called as ``fn(event, **kwargs)``."""

    path: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"fn": self.path, "kwargs": dict(self.kwargs)}

    @staticmethod
    def from_json(value: Any) -> AfterCommit:
        if not isinstance(value, dict) or not isinstance(value.get("fn"), str) or \
                not isinstance(value.get("kwargs", {}), dict):
            raise ValueError(f"not an after_commit registration: {value!r}")
        return AfterCommit(value["fn"], value.get("kwargs", {}))


def after_commit(session: Session | scoped_session[Any], callback: Callable[..., None], /, **kwargs: Any) -> None:
    """Inside a handler: runs ``callback(event, **kwargs)`` once the handler's transaction committed.

    For effects outside the database (an e-mail, an HTTP call) that must not happen for a
    transaction that rolled back. At least once: the registration is stored in the event's
    processed_events row in the same transaction, so a crash after the commit and before the
    callback ran (or before it was recorded as done) runs it after the restart, when the record
    comes again. Pass ``event.id`` to the receiving system as the idempotency key, so that such a
    repeat is harmless there.

    ``callback`` must be a module-level function (stored by its import path, so that a restarted
    process can find it; a lambda or a closure raises TypeError), ``kwargs`` JSON values.
    A callback that raises is retried like a failing handler (the event's database effects stay
    committed; only the callbacks not yet run are run again), and after ``max_attempts`` the record
    is dead-lettered with reason ``after_commit_error``.
    """
    registrations = session.info.get(_REGISTRATIONS)
    if registrations is None:
        raise RuntimeError("after_commit() is only valid inside a handler run by IdempotentConsumer "
                           "or outboxd.testing.FakeConsumer, on the session it was given")
    path = callable_path(callback)
    try:
        encoded = json.loads(json.dumps(kwargs, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(f"after_commit: the keyword arguments must be JSON values (they are stored until the "
                        f"callback ran): {e}") from e
    registrations.append(AfterCommit(path, encoded))


def callable_path(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a module-level function, checked to resolve back to ``fn``."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        raise TypeError(f"after_commit: {fn!r} is not a module-level function; a lambda, closure or bound "
                        "method cannot be found again after a restart. Define it at module level and pass "
                        "what it needs as keyword arguments")
    path = f"{module}:{qualname}"
    if resolve(path) is not fn:
        raise TypeError(f"after_commit: {path} does not resolve to {fn!r}; pass a module-level function")
    return path


_resolved: dict[str, Callable[..., None]] = {}


def resolve(path: str) -> Callable[..., None]:
    """The function named ``module:qualname``."""
    fn = _resolved.get(path)
    if fn is None:
        module, _, qualname = path.partition(":")
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
        if not callable(target):
            raise TypeError(f"{path} is not callable")
        fn = _resolved[path] = target
    return fn


# -- failures ----------------------------------------------------------------------------------

_TRANSIENT_SQLSTATES = ("08", "40", "53", "57P")  # connection, rollback (serialization, deadlock), resources, shutdown


def is_transient(error: BaseException) -> bool:
    """The default ``is_transient``: infrastructure trouble that retrying later cures, never a reason
    to dead-letter an event: a lost or refused database connection, a serialization failure or
    deadlock, too many connections, a server shutdown, a pool timeout, a processed_events schema
    to fix. Anything else the handler raises counts toward ``max_attempts``."""
    if isinstance(error, (SchemaError, sa_exc.DisconnectionError, sa_exc.TimeoutError, sa_exc.InterfaceError)):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated or isinstance(error, sa_exc.OperationalError):
            return True
        state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        return isinstance(state, str) and state.startswith(_TRANSIENT_SQLSTATES)
    return isinstance(error, (ConnectionError, TimeoutError))


@dataclass(frozen=True)
class Failure:
    """The event at ``Result.failed_index`` failed: in its handler (``stage = "handler"``), or in an
    ``after_commit`` callback after its transaction committed (``"after_commit"``)."""

    stage: str
    cause: BaseException


@dataclass
class Result:
    """``outcomes[i]`` for ``events[i]`` done (committed, callbacks run); on failure the next event,
    ``events[len(outcomes)]``, failed."""

    outcomes: list[Outcome]
    failure: Failure | None = None
    handler_calls: int = 0
    handler_reruns: int = 0
    after_commit_calls: int = 0
    transactions: int = 0

    @property
    def failed_index(self) -> int:
        return len(self.outcomes)


class _CommitFailed(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


# -- the processor -----------------------------------------------------------------------------

class Processor:
    """Runs handlers for events with the semantics described in the module docstring."""

    def __init__(self, *, group_id: str, handler: Handler, session_factory: SessionFactory,
                 table: Table, instruments: Instruments | None = None) -> None:
        self.group_id = group_id
        self._handler = handler
        if isinstance(session_factory, Engine):
            self.engine = session_factory
            self._make_session: Callable[..., Session] = sessionmaker()
        else:
            self._make_session = session_factory
            with session_factory() as probe:
                bind = probe.get_bind()
            self.engine = bind if isinstance(bind, Engine) else bind.engine
        self.table = table
        self._instruments = instruments
        self._claims: dict[str, Any] = {}  # dialect name -> claim statement
        self._schema_checked = False
        # Event ids whose handler ran without its transaction committing: running it again is a re-run.
        self._ran: dict[uuid.UUID, tuple[str, int]] = {}
        t = table
        self._set_pending = (update(t).where(t.c.consumer_group == bindparam("_group"),
                                             t.c.event_id == bindparam("_event"))
                             .values(after_commit=bindparam("_after_commit", type_=t.c.after_commit.type)))

    def session(self) -> Session:
        """A session on the consumer's database (for schema work and lookups)."""
        return self._make_session(bind=self.engine)

    def _handler_session(self, conn: Connection) -> Session:
        session = self._make_session(bind=conn, join_transaction_mode="create_savepoint")
        if session.get_bind() is not conn:
            raise SchemaError("the session factory's sessions do not use the connection they are given (a custom "
                              "get_bind?): the handler's effects would not be in the batch's transaction")
        return session

    def forget_partition(self, topic: str, partition: int) -> None:
        """The partition went to another consumer: its handlers' runs are not ours to count."""
        self._ran = {k: v for k, v in self._ran.items() if v != (topic, partition)}

    def forget(self, event: Event) -> None:
        self._ran.pop(event.id, None)

    def process(self, events: Sequence[Event]) -> Result:
        result = Result([])
        if not events:
            return result
        try:
            self._process(events, result)
        except _CommitFailed as e:
            if is_transient(e.cause) or len(events) == 1:
                result.failure = Failure("handler", e.cause)
                return result
            log.warning("committing a batch of %d events failed (%s: %s); processing them one per "
                        "transaction to find the event at fault", len(events), type(e.cause).__name__, e.cause)
            # One per transaction (re-running handlers whose effects did not commit), up to a failure.
            for event in events:
                try:
                    before = len(result.outcomes)
                    self._process([event], result)
                except _CommitFailed as single:
                    result.failure = Failure("handler", single.cause)
                    return result
                if result.failure is not None or len(result.outcomes) == before:
                    return result
        return result

    # The one transaction. Appends to result.outcomes the events done; sets result.failure.
    def _process(self, events: Sequence[Event], result: Result) -> None:
        t, group = self.table, self.group_id
        first: dict[uuid.UUID, Event] = {}
        for event in events:
            first.setdefault(event.id, event)
        rows = [{"consumer_group": group, "event_id": e.id, "kafka_topic": e.topic, "kafka_partition": e.partition,
                 "kafka_offset": e.offset} for e in first.values()]
        done: list[Event] = []
        outcomes: list[Outcome] = []
        callbacks: dict[uuid.UUID, list[AfterCommit]] = {}
        failure: Failure | None = None
        try:
            with self.engine.connect() as conn:
                transaction = conn.begin()
                if not self._schema_checked:
                    self._check_schema(conn)
                claimed = self._claim_ids(conn, list(first.values()), rows)
                recovered: set[uuid.UUID] = set()
                unclaimed = [i for i in first if i not in claimed]
                if unclaimed:
                    # Duplicates: a crash may have left their after_commit callbacks to run.
                    for event_id, stored in conn.execute(
                            select(t.c.event_id, t.c.after_commit).where(
                                t.c.consumer_group == group, t.c.event_id.in_(unclaimed),
                                t.c.after_commit.is_not(None))):
                        callbacks[event_id] = [AfterCommit.from_json(v) for v in stored or []]
                        recovered.add(event_id)
                tracing = self._instruments is not None and self._instruments.tracing()
                with self._handler_session(conn) as session:
                    for event in events:
                        if not (event.id in claimed and first[event.id] is event):
                            outcomes.append(Outcome.DUPLICATE)
                            done.append(event)
                            continue
                        error = self._run_handler(session, event, callbacks, result, tracing)
                        if error is not None:
                            failure = Failure("handler", error)
                            break
                        outcomes.append(Outcome.PROCESSED)
                        done.append(event)
                if failure is not None and Outcome.PROCESSED not in outcomes:
                    transaction.rollback()  # nothing of ours to keep
                else:
                    if failure is not None:
                        rest = {e.id for e in events[len(done):] if e.id in claimed and first[e.id] is e}
                        if rest:
                            conn.execute(delete(t).where(t.c.consumer_group == group, t.c.event_id.in_(rest)))
                    fresh = [{"_group": group, "_event": i, "_after_commit": [r.to_json() for r in regs]}
                             for i, regs in callbacks.items() if i not in recovered]
                    if fresh:
                        conn.execute(self._set_pending, fresh)
                    transaction.commit()
        except Exception as e:  # the claim, the DELETE/UPDATE or the COMMIT
            raise _CommitFailed(e) from e
        result.transactions += 1
        for event, outcome in zip(done, outcomes):
            if outcome is Outcome.PROCESSED:
                self._ran.pop(event.id, None)
        # After the commit: the callbacks, in record order; then clear them in the database.
        ran: list[uuid.UUID] = []
        for index, event in enumerate(done):
            registrations = callbacks.get(event.id)
            if registrations and first[event.id] is event:
                for n, registration in enumerate(registrations):
                    try:
                        result.after_commit_calls += 1
                        resolve(registration.path)(event, **registration.kwargs)
                    except Exception as e:
                        log.warning("after_commit %s of event %s failed (%s: %s); it runs again when the "
                                    "record comes again", registration.path, event.id, type(e).__name__, e)
                        try:
                            self._mark_done(ran)
                        except Exception as cleared:  # they run again when their records come again
                            log.warning("could not clear the after_commit callbacks that ran (%s)", cleared)
                        self._store_pending(event.id, registrations[n:])
                        result.outcomes += outcomes[:index]
                        result.failure = Failure("after_commit", e)
                        return
                ran.append(event.id)
        try:
            self._mark_done(ran)
        except Exception as e:
            result.failure = Failure("after_commit", e)
            return
        result.outcomes += outcomes
        result.failure = failure

    def _run_handler(self, session: Session, event: Event, callbacks: dict[uuid.UUID, list[AfterCommit]],
                     result: Result, tracing: bool) -> Exception | None:
        if event.id in self._ran:
            result.handler_reruns += 1
        self._ran[event.id] = (event.topic, event.partition)
        result.handler_calls += 1
        registrations: list[AfterCommit] = []
        session.info[_REGISTRATIONS] = registrations
        try:
            with self._span(event) if tracing else nullcontext():
                self._handler(session, event)
                if session.in_transaction():  # the handler used the session: flush, RELEASE SAVEPOINT
                    session.commit()
        except Exception as e:
            session.rollback()  # ROLLBACK TO SAVEPOINT (if it got that far); its objects leave the session
            return e
        finally:
            del session.info[_REGISTRATIONS]
        if registrations:
            callbacks[event.id] = registrations
        return None

    def _span(self, event: Event) -> AbstractContextManager[Any]:
        assert self._instruments is not None
        return self._instruments.consumer_span(event, self.group_id)

    def clear_after_commit(self, event: Event) -> None:
        """Drops the stored callbacks of ``event`` (dead-lettered: they will not run)."""
        self._mark_done([event.id])

    def _mark_done(self, ids: Iterable[uuid.UUID]) -> None:
        ids = list(ids)
        if not ids:
            return
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(update(t).where(t.c.consumer_group == self.group_id, t.c.event_id.in_(ids))
                         .values(after_commit=None))

    def _store_pending(self, event_id: uuid.UUID, rest: list[AfterCommit]) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(self._set_pending, [{"_group": self.group_id, "_event": event_id,
                                                  "_after_commit": [r.to_json() for r in rest]}])
        except Exception as e:  # they stay stored as they were: all of them run again
            log.warning("could not record which after_commit callbacks of %s ran (%s); all run again", event_id, e)

    def _claim_ids(self, conn: Connection, events: list[Event], rows: list[dict[str, Any]]) -> set[uuid.UUID]:
        """Inserts the rows that are not there yet; returns the ids it inserted."""
        name = conn.dialect.name
        if name == "postgresql":
            # One small statement with array parameters: no 500-row VALUES list to build and parse.
            return {row[0] for row in conn.execute(self._claim_pg(), {
                "group": self.group_id, "ids": [e.id for e in events], "topics": [e.topic for e in events],
                "partitions": [e.partition for e in events], "offsets": [e.offset for e in events]})}
        if name != "sqlite":
            raise SchemaError(f"the consumer needs PostgreSQL (or SQLite for unit tests), not {name}")
        claim = self._claims.get(name)
        if claim is None:
            claim = self._claims[name] = (
                sqlite.insert(self.table).on_conflict_do_nothing(index_elements=["consumer_group", "event_id"])
                .returning(self.table.c.event_id))
        return {row[0] for row in conn.execute(claim, rows)}

    def _claim_pg(self) -> Any:
        claim = self._claims.get("postgresql")
        if claim is None:
            t = self.table
            qualified = ".".join(quote_ident(part) for part in (t.schema, t.name) if part)
            claim = self._claims["postgresql"] = text(
                f"INSERT INTO {qualified} (consumer_group, event_id, kafka_topic, kafka_partition, kafka_offset) "
                "SELECT :group, e.id, e.topic, e.part, e.off FROM unnest(CAST(:ids AS uuid[]), "
                "CAST(:topics AS text[]), CAST(:partitions AS integer[]), CAST(:offsets AS bigint[])) "
                "AS e(id, topic, part, off) ON CONFLICT (consumer_group, event_id) DO NOTHING RETURNING event_id")
        return claim

    def _check_schema(self, conn: Connection) -> None:
        t = self.table
        try:
            with conn.begin_nested():
                conn.execute(select(*t.c).limit(0))
        except sa_exc.ProgrammingError as e:
            raise SchemaError(
                f"{t.fullname} is missing or lacks a column ({e.orig}); create or upgrade it: "
                f"consumer.create_schema(), or a migration calling outboxd.migrations.upgrade_processed_events() "
                f"(idempotent; adds the after_commit column of outboxd 0.2)") from e
        self._schema_checked = True


class Attempts:
    """Failed attempts per record (topic, partition, offset), for ``max_attempts``."""

    def __init__(self, max_attempts: int | None) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be >= 1, or None to retry forever")
        self.max_attempts = max_attempts
        self._counts: dict[tuple[str, int, int], int] = {}

    def failed(self, event: Event) -> int:
        """Counts a failed attempt; returns how many so far."""
        key = (event.topic, event.partition, event.offset)
        self._counts[key] = self._counts.get(key, 0) + 1
        return self._counts[key]

    def exhausted(self, count: int) -> bool:
        return self.max_attempts is not None and count >= self.max_attempts

    def forget(self, event: Event) -> None:
        self._counts.pop((event.topic, event.partition, event.offset), None)

    def forget_partition(self, topic: str, partition: int) -> None:
        self._counts = {k: v for k, v in self._counts.items() if k[:2] != (topic, partition)}
