"""Alembic environment: async engine, the URL from the config or DATABASE_URL (never guessed)."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from partner_gateway import models  # noqa: F401  (registers the tables)
from partner_gateway.config import DATABASE_URL_PREFIX, Settings
from partner_gateway.db import Base, asyncpg_dsn, connection_mode, connector
from partner_gateway.schema import ROW_PRIVILEGES, RUNTIME_PRIVILEGES

config = context.config
if config.config_file_name is not None and not config.attributes.get("skip_logging_config"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _migrate(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        # The role's defaults may bound statements (DB_POOLER=pgbouncer): not a migration's.
        connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
        connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
        context.run_migrations()
        runtime_roles = _runtime_roles(connection)
        _narrow_privileges(connection, runtime_roles)
        _set_role_defaults(connection, _mode()[1], runtime_roles)


def _runtime_roles(connection: Connection) -> list[str]:
    """The roles this owner's default privileges let write rows in the tables it creates: the
    service's runtime role(s), as deploy/postgres/app-role.psql sets them up."""
    found = connection.exec_driver_sql(
        "SELECT DISTINCT r.rolname FROM pg_default_acl d"
        " CROSS JOIN LATERAL aclexplode(d.defaclacl) a JOIN pg_roles r ON r.oid = a.grantee"
        " WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        " AND d.defaclobjtype = 'r' AND a.privilege_type = 'INSERT' ORDER BY 1"
    )
    return list(found.scalars())


def _narrow_privileges(connection: Connection, roles: list[str]) -> None:
    """Take from each runtime role what RUNTIME_PRIVILEGES does not give it: the default
    privileges granted it rows on every table a migration created, the exceptions included."""
    quote = connection.dialect.identifier_preparer.quote
    held = connection.execute(
        text(
            "SELECT c.relname, r.rolname, a.privilege_type FROM pg_class c"
            " CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee"
            " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')"
            " AND r.rolname = ANY(:roles)"
        ),
        {"roles": roles},
    )
    excess: dict[tuple[str, str], list[str]] = {}
    for table, role, privilege in held:
        if privilege not in RUNTIME_PRIVILEGES.get(table, ROW_PRIVILEGES):
            excess.setdefault((table, role), []).append(privilege)
    for (table, role), privileges in sorted(excess.items()):
        connection.exec_driver_sql(
            f"REVOKE {', '.join(privileges)} ON TABLE {quote(table)} FROM {quote(role)}"
        )


def _set_role_defaults(connection: Connection, defaults: dict[str, str], runtime_roles: list[str]) -> None:
    """`ALTER ROLE <role> IN DATABASE current_database() SET name = value` for each, for the
    owner (current_user) and the runtime roles, which behind PgBouncer need them most."""
    if not defaults:
        return
    database = connection.exec_driver_sql("SELECT current_database()").scalar_one()
    quote = connection.dialect.identifier_preparer.quote
    roles = ["CURRENT_USER", *(quote(role) for role in runtime_roles)]
    for name, value in defaults.items():
        literal = "'" + value.replace("'", "''") + "'"
        for role in roles:
            connection.exec_driver_sql(
                f"ALTER ROLE {role} IN DATABASE {quote(database)} SET {name} = {literal}"
            )
        # They apply to sessions started from now on. PgBouncer keeps this server session for
        # its next clients, so it gets them too (session-level: they outlive the transaction).
        connection.exec_driver_sql(f"SELECT set_config('{name}', {literal}, false)")


def _mode() -> tuple[dict[str, Any], dict[str, str]]:
    """Connect arguments and role defaults: from `partner-gateway migrate`, else (a plain
    `alembic upgrade head`) from the settings' DB_POOLER, so both do the same."""
    if "role_defaults" in config.attributes:
        return config.attributes["connect_args"], config.attributes["role_defaults"]
    mode = connection_mode(Settings())
    return {"statement_cache_size": mode.statement_cache_size}, mode.role_defaults


async def _run(url: str) -> None:
    # Connections are opened as the request path opens them: the same DSN (several hosts,
    # target_session_attrs, ssl) and, with several hosts, the same search for the primary.
    connect, dsn, connect_args = connector(url), asyncpg_dsn(url), _mode()[0]
    engine = create_async_engine(DATABASE_URL_PREFIX, async_creator=lambda: connect(dsn, **connect_args))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_migrate)
    finally:
        await engine.dispose()


def main() -> None:
    url = config.get_main_option("sqlalchemy.url") or Settings().database_url
    if not url:
        # Never a database of its own: local mode's is migrated by `partner-gateway serve --local`.
        raise SystemExit("alembic: DATABASE_URL is required")
    asyncio.run(_run(url))


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
main()
