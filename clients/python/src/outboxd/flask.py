"""The Flask extension: ``Outboxd(app)`` / ``init_app``, settings from ``app.config``, Flask-SQLAlchemy's
session, and the ``flask outboxd`` commands (``pip install 'outboxd[flask]'``).

    db = SQLAlchemy(model_class=Base)
    outboxd = Outboxd()

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config.from_prefixed_env()        # e.g. FLASK_OUTBOXD_KAFKA_BOOTSTRAP=...
        db.init_app(app)
        outboxd.init_app(app)                 # after db.init_app (or pass db=db)
        return app

    @app.post("/customers")
    def register():
        customer = Customer(...)
        db.session.add(customer)
        db.session.flush()
        outboxd.emit("customer", customer.id, "CustomerRegistered", CustomerRegistered(...))
        db.session.commit()                   # the customer and its event, or neither

    $ flask outboxd consume --group welcome --topic outbox.event.customer --handler myapp.welcome:on_registered

Settings (``app.config``; all optional but the bootstrap servers, which consuming needs):

======================================  ==================  =================================================
``OUTBOXD_KAFKA_BOOTSTRAP``             (none)              Kafka brokers, ``host:port,...``
``OUTBOXD_KAFKA_CONFIG``                ``{}``              more librdkafka properties (security, client.id)
``OUTBOXD_OUTBOX_TABLE`` / ``_SCHEMA``  outbox / public     the table ``emit()`` writes to
``OUTBOXD_JSON_DEFAULT``                None                ``json_default`` of ``emit()``
``OUTBOXD_TRACE_CONTEXT``               True                ``traceparent`` from the current span in ``emit()``
``OUTBOXD_PROCESSED_TABLE`` / ``_SCHEMA``  processed_events / public  the consumer's table
``OUTBOXD_DEAD_LETTER_TOPIC``           None                the consumer's dead-letter topic
``OUTBOXD_MAX_ATTEMPTS``                5                   failed attempts before dead-lettering (None: forever)
``OUTBOXD_GROUP_INSTANCE_ID``           None                static membership (``group.instance.id``)
``OUTBOXD_CONSUMER_OPTIONS``            ``{}``              more ``IdempotentConsumer`` keyword arguments
``OUTBOXD_STOP_TIMEOUT``                30                  seconds ``flask outboxd consume`` takes to stop
======================================  ==================  =================================================

The consumer's sessions are Flask-SQLAlchemy's: each batch runs in ``db.session`` of the app
context, so a handler that writes through ``db.session`` instead of the session it is given
writes into the same transaction. It needs an app context: ``flask outboxd consume`` has one; in
your own thread, ``with app.app_context(): consumer.run(stop)``.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Session

from outboxd._processing import Handler, resolve
from outboxd.consumer import IdempotentConsumer
from outboxd.outbox import JsonDefault, Outbox
from outboxd.purge import purge_outbox, purge_processed_events
from outboxd.runner import serve

__all__ = ["Outboxd", "OutboxdSettings", "cli", "parse_duration"]

log = logging.getLogger("outboxd.flask")


@dataclass(frozen=True)
class OutboxdSettings:
    """The ``OUTBOXD_*`` settings of one app, read at ``init_app``."""

    kafka_bootstrap: str | None = None
    kafka_config: Mapping[str, Any] = field(default_factory=dict)
    outbox_table: str = "outbox"
    outbox_schema: str = "public"
    json_default: JsonDefault | None = None
    trace_context: bool = True
    processed_table: str = "processed_events"
    processed_schema: str = "public"
    dead_letter_topic: str | None = None
    max_attempts: int | None = 5
    group_instance_id: str | None = None
    consumer_options: Mapping[str, Any] = field(default_factory=dict)
    stop_timeout: float = 30.0

    @staticmethod
    def from_config(config: Mapping[str, Any]) -> OutboxdSettings:
        names = {f: f"OUTBOXD_{f.upper()}" for f in OutboxdSettings.__dataclass_fields__}
        values = {f: config[key] for f, key in names.items() if key in config}
        unknown = sorted(k for k in config if k.startswith("OUTBOXD_") and k not in names.values())
        if unknown:
            raise ValueError(f"Outboxd: unknown settings {unknown}; known: {sorted(names.values())}")
        return OutboxdSettings(**values)


@dataclass
class _State:
    settings: OutboxdSettings
    db: SQLAlchemy
    outbox: Outbox


class Outboxd:
    """The extension. One object may serve several apps (``init_app`` per app)."""

    def __init__(self, app: Flask | None = None, *, db: SQLAlchemy | None = None) -> None:
        self._db = db
        if app is not None:
            self.init_app(app, db=db)

    def init_app(self, app: Flask, *, db: SQLAlchemy | None = None) -> None:
        """Reads the settings, finds Flask-SQLAlchemy (``db``, else the one initialised on ``app``),
        and adds the ``flask outboxd`` commands."""
        db = db or self._db or app.extensions.get("sqlalchemy")
        if not isinstance(db, SQLAlchemy):
            raise RuntimeError("Outboxd.init_app: Flask-SQLAlchemy is not initialised on this app; call "
                               "db.init_app(app) first, or pass Outboxd(app, db=db)")
        settings = OutboxdSettings.from_config(app.config)
        outbox = Outbox(settings.outbox_table, settings.outbox_schema, json_default=settings.json_default,
                        trace_context=settings.trace_context)
        app.extensions["outboxd"] = _State(settings, db, outbox)
        app.cli.add_command(cli)

    @staticmethod
    def _state(app: Flask | None = None) -> _State:
        state = (app or current_app).extensions.get("outboxd")
        if not isinstance(state, _State):
            raise RuntimeError("Outboxd is not initialised on this app: call outboxd.init_app(app)")
        return state

    @property
    def settings(self) -> OutboxdSettings:
        """The current app's settings."""
        return self._state().settings

    @property
    def outbox(self) -> Outbox:
        """The current app's outbox table."""
        return self._state().outbox

    def emit(self, aggregate_type: str, aggregate_id: object, event_type: str, payload: object,
             headers: Mapping[str, str] | None = None, *, id: uuid.UUID | None = None, dedupe_key: object = None,
             destination: str | None = None, json_default: JsonDefault | None = None) -> uuid.UUID:
        """``outboxd.emit()`` into ``db.session`` and the configured outbox: the event commits or
        rolls back with the request's transaction. Returns the event id."""
        state = self._state()
        return state.outbox.emit(state.db.session, aggregate_type, aggregate_id, event_type, payload, headers,
                                 id=id, dedupe_key=dedupe_key, destination=destination, json_default=json_default)

    def consumer(self, *, group_id: str, topics: list[str], handler: Handler, **options: Any) -> IdempotentConsumer:
        """An ``IdempotentConsumer`` with the app's settings and Flask-SQLAlchemy's session (call it,
        and run the consumer, inside an app context). ``options`` override the settings."""
        state = self._state()
        s = state.settings
        if not s.kafka_bootstrap:
            raise RuntimeError("Outboxd: OUTBOXD_KAFKA_BOOTSTRAP is not set (Kafka brokers, host:port,...)")
        session = _FlaskSessions(state.db)

        arguments: dict[str, Any] = {
            "processed_table": s.processed_table, "schema": s.processed_schema, "config": dict(s.kafka_config),
            "dead_letter_topic": s.dead_letter_topic, "max_attempts": s.max_attempts,
            "group_instance_id": s.group_instance_id, **s.consumer_options, **options,
        }
        return IdempotentConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=group_id, topics=topics,
                                  handler=handler, session_factory=session, **arguments)


class _FlaskSessions:
    """The consumer's session factory: each session it makes becomes ``db.session`` of the app
    context, so a handler writing through ``db.session`` writes into its savepoint too."""

    def __init__(self, db: SQLAlchemy) -> None:
        self._db = db

    def __call__(self, **options: Any) -> Session:
        options.setdefault("bind", self._db.engine)
        # A plain Session: Flask-SQLAlchemy's own routes statements by bind key to its engines, which
        # would leave the batch's connection (and its transaction).
        session = Session(**options)
        registry: Any = self._db.session.registry
        registry.set(session)
        return session


_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")


def parse_duration(text: str) -> timedelta:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"`` as a timedelta."""
    match = _DURATION.match(text)
    if match is None:
        raise click.BadParameter(f"{text!r}: a number and a unit s, m, h or d, e.g. 30d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


#: ``flask outboxd ...`` (added to the app's CLI by ``init_app``).
cli = AppGroup("outboxd", help="outboxd: consume events, purge tables.")


@cli.command("consume")
@click.option("--group", "group_id", required=True, help="Kafka consumer group (also the de-duplication key).")
@click.option("--topic", "topics", multiple=True, required=True, help="Topic to read (repeatable; ^regex allowed).")
@click.option("--handler", "handler_path", required=True,
              help="The handler by import path, module:function, called as handler(session, event).")
@click.option("--dead-letter-topic", default=None, help="Overrides OUTBOXD_DEAD_LETTER_TOPIC.")
@click.option("--max-attempts", type=int, default=None, help="Overrides OUTBOXD_MAX_ATTEMPTS (0: retry forever).")
@click.option("--instance-id", default=None, help="group.instance.id (static membership); overrides the setting.")
@click.option("--create-schema", is_flag=True, help="Create or upgrade processed_events first.")
def consume_command(group_id: str, topics: tuple[str, ...], handler_path: str, dead_letter_topic: str | None,
                    max_attempts: int | None, instance_id: str | None, create_schema: bool) -> None:
    """Consume outboxd's events with a handler, in the app context, until SIGTERM or SIGINT."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if ":" not in handler_path:
        raise click.BadParameter(f"{handler_path!r}: expected module:function", param_hint="--handler")
    try:
        handler = resolve(handler_path)
    except (ImportError, AttributeError, TypeError) as e:
        raise click.BadParameter(f"cannot import {handler_path}: {e}", param_hint="--handler") from e
    options: dict[str, Any] = {}
    if dead_letter_topic is not None:
        options["dead_letter_topic"] = dead_letter_topic
    if max_attempts is not None:
        options["max_attempts"] = max_attempts or None
    if instance_id is not None:
        options["group_instance_id"] = instance_id
    extension = Outboxd()
    try:
        consumer = extension.consumer(group_id=group_id, topics=list(topics), handler=handler, **options)
    except (RuntimeError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    if create_schema:
        consumer.create_schema()
    sys.exit(serve(consumer, stop_timeout=extension.settings.stop_timeout))


@cli.command("purge")
@click.option("--processed-older-than", type=parse_duration, default=None,
              help="Delete processed_events rows older than this (e.g. 30d); keep it beyond the topics' retention.")
@click.option("--group", "group_id", default=None, help="Only this consumer group's rows.")
@click.option("--outbox-older-than", type=parse_duration, default=None,
              help="CALL outbox_purge (sql/purge.sql) on the configured outbox table (e.g. 3d).")
def purge_command(processed_older_than: timedelta | None, group_id: str | None,
                  outbox_older_than: timedelta | None) -> None:
    """Purge processed_events and/or the outbox table, in batches."""
    state = Outboxd._state()
    s, engine = state.settings, state.db.engine
    if processed_older_than is None and outbox_older_than is None:
        raise click.UsageError("nothing to do: give --processed-older-than and/or --outbox-older-than")
    if processed_older_than is not None:
        n = purge_processed_events(engine, processed_older_than, table=s.processed_table,
                                   schema=s.processed_schema, consumer_group=group_id)
        click.echo(f"processed_events: deleted {n} row(s) older than {processed_older_than}")
    if outbox_older_than is not None:
        purge_outbox(engine, outbox_older_than, table=state.outbox.qualified_name)
        click.echo(f"{state.outbox.qualified_name}: purged rows older than {outbox_older_than}")
