#!/bin/sh
# First start of the postgres container (/docker-entrypoint-initdb.d), as the superuser
# POSTGRES_USER: create the schema owner (CREATEROLE, never SUPERUSER) with the name and password
# of MIGRATE_DATABASE_URL, hand it the database, then, as that owner, the service's row-only role
# with those of DATABASE_URL (app-role.psql, exactly as an operator runs it elsewhere).
# Both URLs come from files (MIGRATE_DATABASE_URL_FILE, DATABASE_URL_FILE: compose's secrets),
# never from the environment; each password is thus written once, in the URL the service uses.
set -eu
: "${MIGRATE_DATABASE_URL_FILE:?MIGRATE_DATABASE_URL_FILE must be set}"
: "${DATABASE_URL_FILE:?DATABASE_URL_FILE must be set}"

# Sets $user and $password from the URL in file $1 (scheme://user:password@host...). Both in
# URL-safe characters only, so that they need no percent-encoding: refused otherwise.
url_credentials() {
    url=$(cat "$1") || exit 1
    credentials=${url#*://}
    credentials=${credentials%%@*}
    user=${credentials%%:*}
    password=${credentials#*:}
    case "$user:$password" in
        "$credentials") ;;
        *) echo "$1: no user:password@ in the URL" >&2; exit 1 ;;
    esac
    case "$user" in ''|*[!A-Za-z0-9._~-]*) echo "$1: the user must be URL-safe ([A-Za-z0-9._~-])" >&2; exit 1 ;; esac
    case "$password" in ''|*[!A-Za-z0-9._~-]*) echo "$1: the password must be URL-safe ([A-Za-z0-9._~-])" >&2; exit 1 ;; esac
}

url_credentials "$MIGRATE_DATABASE_URL_FILE"
owner=$user
owner_password=$password
url_credentials "$DATABASE_URL_FILE"
app_role=$user
app_password=$password
[ "$owner" != "$app_role" ] || { echo "DATABASE_URL and MIGRATE_DATABASE_URL name one role" >&2; exit 1; }

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v owner="$owner" -v owner_password="$owner_password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN CREATEROLE', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
ALTER ROLE :"owner" WITH PASSWORD :'owner_password';
SELECT format('ALTER DATABASE %I OWNER TO %I', current_database(), :'owner') \gexec
SQL
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_role="$app_role" -v app_password="$app_password" \
    -c "SET ROLE \"$owner\"" -f /docker-entrypoint-initdb.d/app-role.psql
