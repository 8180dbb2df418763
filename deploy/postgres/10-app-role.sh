#!/bin/sh
# First start of the postgres container (/docker-entrypoint-initdb.d), as the superuser
# POSTGRES_USER: create the schema owner `gateway` (CREATEROLE, never SUPERUSER) with
# OWNER_DB_PASSWORD, hand it the database, then, as that owner, the service's row-only role from
# APP_DB_USER / APP_DB_PASSWORD (app-role.psql, exactly as an operator runs it elsewhere).
set -eu
: "${OWNER_DB_PASSWORD:?OWNER_DB_PASSWORD must be set}"
: "${APP_DB_PASSWORD:?APP_DB_PASSWORD must be set}"
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v owner=gateway -v owner_password="$OWNER_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN CREATEROLE', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
ALTER ROLE :"owner" WITH PASSWORD :'owner_password';
SELECT format('ALTER DATABASE %I OWNER TO %I', current_database(), :'owner') \gexec
SQL
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_role="${APP_DB_USER:-gateway_app}" -v app_password="$APP_DB_PASSWORD" \
    -c "SET ROLE gateway" -f /docker-entrypoint-initdb.d/app-role.psql
