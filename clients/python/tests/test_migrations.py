"""Alembic as a new user meets it: a fresh ``alembic init`` and Flask-Migrate's ``flask db``, run as
commands on the real PostgreSQL. One head, tables created, autogenerate that leaves them alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, text

from outboxd.testing import temp_database

BIN = Path(sys.executable).parent

#: What a user pastes into the revision that ``alembic revision -m outbox`` wrote.
IMPORT = "from outboxd.migrations import downgrade_outbox, downgrade_processed_events, upgrade_outbox, " \
         "upgrade_processed_events\n"
UPGRADE = "    upgrade_outbox()\n    upgrade_processed_events()\n"
DOWNGRADE = "    downgrade_processed_events()\n    downgrade_outbox()\n"


class Shell:
    """Runs commands in ``cwd`` like a terminal session, keeping a transcript."""

    def __init__(self, cwd: Path, url: str) -> None:
        self.cwd, self.transcript = cwd, []  # type: list[str]
        self.env = {**os.environ, "DATABASE_URL": url, "PATH": f"{BIN}:{os.environ['PATH']}",
                    "FLASK_APP": "app.py", "PYTHONPATH": str(cwd)}

    def __call__(self, *args: str, ok: bool = True) -> str:
        result = subprocess.run(list(args), cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=120)
        output = (result.stdout + result.stderr).strip()
        self.transcript.append(f"$ {' '.join(args)}\n{output}".rstrip())
        if ok:
            assert result.returncode == 0, "\n\n".join(self.transcript)
        return output


def fill_revision(path: Path) -> None:
    """Adds the outboxd helper calls to an empty revision, as the README tells a user to."""
    source = path.read_text()
    source = source.replace("from alembic import op\n", "from alembic import op\n" + IMPORT, 1)
    source, ups = re.subn(r"(def upgrade\(\)[^:]*:\n(?:    \"\"\".*\"\"\"\n)?)    pass\n", rf"\g<1>{UPGRADE}", source)
    source, downs = re.subn(r"(def downgrade\(\)[^:]*:\n(?:    \"\"\".*\"\"\"\n)?)    pass\n", rf"\g<1>{DOWNGRADE}",
                            source)
    assert ups == downs == 1, source
    path.write_text(source)


def revision_file(output: str) -> Path:
    match = re.search(r"Generating (\S+\.py)", output)
    assert match, output
    return Path(match.group(1))


def tables(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return {row[0] for row in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))}


def published(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = 'outboxd'"))]


def test_fresh_alembic_init_own_revision_one_head_and_autogenerate(tmp_path: Path) -> None:
    with temp_database("pyalinit") as (_, engine):
        url = engine.url.render_as_string(hide_password=False)
        sh = Shell(tmp_path, url)
        sh("alembic", "init", "alembic")
        ini = tmp_path / "alembic.ini"
        assert "path_separator = os" in ini.read_text()  # what alembic init writes today
        ini.write_text(ini.read_text().replace("sqlalchemy.url = driver://user:pass@localhost/dbname",
                                               f"sqlalchemy.url = {url}"))
        fill_revision(revision_file(sh("alembic", "revision", "-m", "outbox")))
        assert len(sh("alembic", "heads").splitlines()) == 1
        sh("alembic", "upgrade", "head")
        assert {"outbox", "processed_events", "alembic_version"} <= tables(engine)
        assert published(engine) == ["outbox"]

        # Autogenerate with the application's models and exclude_outbox_tables(): the new
        # revision creates the model's table and says nothing about outboxd's.
        env = tmp_path / "alembic" / "env.py"
        env.write_text(env.read_text()
                       .replace("target_metadata = None", "from models import metadata as target_metadata\n"
                                "from outboxd.migrations import exclude_outbox_tables")
                       .replace("target_metadata=target_metadata",
                                "target_metadata=target_metadata, include_object=exclude_outbox_tables()"))
        assert env.read_text().count("include_object=exclude_outbox_tables()") == 2  # offline and online
        (tmp_path / "models.py").write_text(
            "from sqlalchemy import Column, Integer, MetaData, Table\n"
            "metadata = MetaData()\nTable('orders', metadata, Column('id', Integer, primary_key=True))\n")
        generated = revision_file(sh("alembic", "revision", "--autogenerate", "-m", "orders")).read_text()
        assert "op.create_table('orders'" in generated
        assert "outbox" not in generated and "processed_events" not in generated, generated
        sh("alembic", "upgrade", "head")
        sh("alembic", "downgrade", "base")
        assert tables(engine) == {"alembic_version"} and published(engine) == []


def test_packaged_branch_needs_a_path_separator_other_than_os(tmp_path: Path) -> None:
    with temp_database("pyalbranch") as (_, engine):
        url = engine.url.render_as_string(hide_password=False)
        sh = Shell(tmp_path, url)
        sh("alembic", "init", "alembic")
        ini = tmp_path / "alembic.ini"
        source = ini.read_text().replace("sqlalchemy.url = driver://user:pass@localhost/dbname",
                                         f"sqlalchemy.url = {url}")
        location = "version_locations = %(here)s/alembic/versions outboxd.migrations:versions"
        # The pitfall: with path_separator = os the colon splits the location; nothing is found.
        ini.write_text(source.replace("# version_locations = %(here)s/bar:%(here)s/bat:%(here)s/alembic/versions",
                                      location.replace(" ", ":", 1)))
        assert "outboxd" not in sh("alembic", "heads", ok=False)
        # As documented: path_separator = space.
        ini.write_text(source.replace("path_separator = os", "path_separator = space")
                       .replace("# version_locations = %(here)s/bar:%(here)s/bat:%(here)s/alembic/versions", location))
        heads = sh("alembic", "heads")
        assert "outboxd_0001 (outboxd)" in heads and "outboxd_consumer_0002 (outboxd_consumer)" in heads
        # Branches of their own: `upgrade head` (what flask db upgrade runs) refuses, `heads` works.
        assert "Multiple head revisions" in sh("alembic", "upgrade", "head", ok=False)
        sh("alembic", "upgrade", "heads")
        assert {"outbox", "processed_events"} <= tables(engine) and published(engine) == ["outbox"]
        with engine.connect() as conn:  # outboxd_consumer_0002: the after_commit column, the purge procedure
            assert conn.execute(text("SELECT count(*) FROM information_schema.columns WHERE table_name = "
                                     "'processed_events' AND column_name = 'after_commit'")).scalar_one() == 1
            assert conn.execute(text("SELECT to_regprocedure('outboxd_purge_processed_events(regclass,interval,"
                                     "integer,text)') IS NOT NULL")).scalar_one()
        installed = Path(sh("python", "-c", "import outboxd.migrations as m; print(m.versions_dir())"))
        assert sorted(p.name for p in installed.glob("*.py")) == \
            ["outboxd_0001_outbox.py", "outboxd_consumer_0001_processed_events.py",
             "outboxd_consumer_0002_after_commit.py"]


FLASK_APP = '''
import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from outboxd.migrations import exclude_outbox_tables

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
db = SQLAlchemy(app)
migrate = Migrate(app, db, include_object=exclude_outbox_tables())


class Order(db.Model):
    __tablename__ = "orders"
    id = db.Column(db.Integer, primary_key=True)
'''


def test_flask_migrate_db_upgrade_one_head_and_autogenerate(tmp_path: Path, report: Callable[[str], None]) -> None:
    with temp_database("pyflaskmig") as (_, engine):
        url = engine.url.render_as_string(hide_password=False)
        (tmp_path / "app.py").write_text(FLASK_APP)
        sh = Shell(tmp_path, url)
        sh("flask", "db", "init")
        fill_revision(revision_file(sh("flask", "db", "revision", "-m", "outbox")))
        sh("flask", "db", "upgrade")
        assert {"outbox", "processed_events"} <= tables(engine) and published(engine) == ["outbox"]
        generated = revision_file(sh("flask", "db", "migrate", "-m", "orders")).read_text()
        assert "op.create_table('orders'" in generated
        assert "outbox" not in generated and "processed_events" not in generated, generated
        sh("flask", "db", "upgrade")
        assert "orders" in tables(engine)
        assert "No changes in schema detected" in sh("flask", "db", "migrate", "-m", "nothing")
        assert len(sh("flask", "db", "heads").splitlines()) == 1
        (Path(os.environ.get("OUTBOXD_PY_TRANSCRIPTS", tmp_path)) / "flask-migrate-session.txt").write_text(
            "\n".join(sh.transcript) + "\n")
