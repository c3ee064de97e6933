"""The Alembic revisions create exactly what sql/outbox.sql creates, compared on the real server."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from outboxd.migrations import versions_dir
from outboxd.schema import create_processed_events
from outboxd.testing import temp_database

REPO = Path(__file__).resolve().parents[3]
SQL_FILE = REPO / "sql" / "outbox.sql"


def snapshot(engine: Engine, schema: str = "public", table: str = "outbox", publication: str = "outboxd") -> dict:
    """What a catalog says about the outbox table and its publication."""
    params = {"rel": f'"{schema}"."{table}"', "pub": publication}
    queries = {
        "columns": """SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                             pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, a.attcollation
                      FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                      WHERE a.attrelid = CAST(:rel AS regclass) AND a.attnum > 0 AND NOT a.attisdropped
                      ORDER BY a.attnum""",
        "constraints": """SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint
                          WHERE conrelid = CAST(:rel AS regclass) ORDER BY conname""",
        "indexes": """SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i
                      JOIN pg_class c ON c.oid = i.indexrelid
                      WHERE i.indrelid = CAST(:rel AS regclass) ORDER BY c.relname""",
        "table": """SELECT relkind, relpersistence, relreplident, relhasrules, relhastriggers, relrowsecurity
                    FROM pg_class WHERE oid = CAST(:rel AS regclass)""",
        "publication": """SELECT pubname, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot
                          FROM pg_publication WHERE pubname = :pub""",
        "publication_tables": """SELECT pubname, schemaname, tablename, attnames, rowfilter
                                 FROM pg_publication_tables WHERE pubname = :pub ORDER BY 2, 3""",
    }
    with engine.connect() as conn:
        return {name: [tuple(row) for row in conn.execute(text(sql), params)] for name, sql in queries.items()}


def alembic_config(tmp_path: Path, engine: Engine, **options: str) -> Config:
    config = Config(str(tmp_path / "alembic.ini"))
    command.init(config, str(tmp_path / "alembic"))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    config.set_main_option("version_locations", str(versions_dir()))
    for name, value in options.items():
        config.set_main_option(name, value)
    return config


def test_alembic_revision_matches_sql_outbox_sql(tmp_path: Path) -> None:
    with temp_database("pysqlfile") as (_, from_sql), temp_database("pyalembic") as (_, from_alembic):
        with from_sql.begin() as conn:
            conn.exec_driver_sql(SQL_FILE.read_text())
        config = alembic_config(tmp_path, from_alembic)
        command.upgrade(config, "outboxd@head")
        expected, actual = snapshot(from_sql), snapshot(from_alembic)
        assert expected["columns"] and expected["publication"], "sql/outbox.sql created nothing?"
        assert actual == expected

        # Idempotent like the file: running both again changes nothing.
        with from_alembic.begin() as conn:
            conn.exec_driver_sql(SQL_FILE.read_text())
        assert snapshot(from_alembic) == expected

        command.downgrade(config, "outboxd@base")
        gone = snapshot_missing(from_alembic)
        assert gone == {"table": None, "publication": 0}


def snapshot_missing(engine: Engine) -> dict:
    with engine.connect() as conn:
        return {
            "table": conn.execute(text("SELECT to_regclass('public.outbox')")).scalar(),
            "publication": conn.execute(text("SELECT count(*) FROM pg_publication WHERE pubname = 'outboxd'")).scalar(),
        }


def test_alembic_revision_with_configured_names_joins_an_existing_publication(tmp_path: Path) -> None:
    with temp_database("pyalembic") as (_, engine):
        with engine.begin() as conn:
            conn.execute(text("CREATE SCHEMA billing"))
            conn.execute(text("CREATE TABLE other (id int PRIMARY KEY)"))
            conn.execute(text("CREATE PUBLICATION events FOR TABLE other WITH (publish = 'insert')"))
        config = alembic_config(tmp_path, engine, outboxd_table="OutboxEvent", outboxd_schema="billing",
                                outboxd_publication="events")
        command.upgrade(config, "outboxd@head")
        tables = snapshot(engine, "billing", "OutboxEvent", "events")["publication_tables"]
        assert [(t[1], t[2]) for t in tables] == [("billing", "OutboxEvent"), ("public", "other")]
        # Downgrade takes the table out of the publication, which stays for its other table.
        command.downgrade(config, "outboxd@base")
        with engine.connect() as conn:
            tables = conn.execute(text("SELECT schemaname, tablename FROM pg_publication_tables "
                                       "WHERE pubname = 'events'")).all()
            assert conn.execute(text("SELECT to_regclass('billing.\"OutboxEvent\"')")).scalar() is None
        assert [tuple(t) for t in tables] == [("public", "other")]


def test_processed_events_revision_matches_the_helper(tmp_path: Path) -> None:
    with temp_database("pyhelper") as (_, by_helper), temp_database("pyalembic") as (_, by_alembic):
        create_processed_events(by_helper)
        command.upgrade(alembic_config(tmp_path, by_alembic), "outboxd_consumer@head")
        expected = snapshot(by_helper, table="processed_events")
        assert expected["constraints"] == [("processed_events_pkey", "p", "PRIMARY KEY (consumer_group, event_id)")]
        assert snapshot(by_alembic, table="processed_events") == expected


@pytest.mark.parametrize("name", ['we"ird', "Mixed Case"])
def test_odd_names_are_quoted(database: tuple[str, Engine], name: str) -> None:
    from outboxd.schema import create_outbox, drop_outbox

    engine = database[1]
    create_outbox(engine, table=name, publication="pub_odd")
    create_outbox(engine, table=name, publication="pub_odd")  # idempotent
    found = snapshot(engine, table=name.replace('"', '""'), publication="pub_odd")
    assert len(found["columns"]) == 8
    assert [t[2] for t in found["publication_tables"]] == [name]
    drop_outbox(engine, table=name, publication="pub_odd")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pg_publication WHERE pubname = 'pub_odd'")).scalar() == 0
