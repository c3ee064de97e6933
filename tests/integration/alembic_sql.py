"""Prints the SQL an Alembic migration runs, as one transaction, for psql.

    python3 alembic_sql.py MIGRATION.py upgrade|downgrade

A stand-in for alembic.op records op.execute() statements, so that the test
needs neither Alembic nor SQLAlchemy; Alembic runs a PostgreSQL migration in one
transaction, hence BEGIN/COMMIT.
"""
import importlib.util
import sys
import types

statements = []
alembic = types.ModuleType("alembic")
alembic.op = types.SimpleNamespace(execute=lambda sql: statements.append(str(sql).strip()))
sys.modules["alembic"] = alembic

path, direction = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("migration", path)
migration = importlib.util.module_from_spec(spec)
spec.loader.exec_module(migration)
getattr(migration, direction)()

print("BEGIN;")
for statement in statements:
    print(statement + ";")
print("COMMIT;")
