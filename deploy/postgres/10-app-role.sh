#!/bin/sh
# First start of the postgres container (/docker-entrypoint-initdb.d): create the service's
# row-only role from APP_DB_USER / APP_DB_PASSWORD. The schema owner is POSTGRES_USER.
set -eu
: "${APP_DB_PASSWORD:?APP_DB_PASSWORD must be set}"
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_role="${APP_DB_USER:-gateway_app}" -v app_password="$APP_DB_PASSWORD" \
    -f /docker-entrypoint-initdb.d/app-role.psql
