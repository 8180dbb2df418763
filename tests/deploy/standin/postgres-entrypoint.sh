#!/bin/sh
# Stand-in for the official postgres image's entrypoint, for machines that reach no container
# registry. Same contract: POSTGRES_USER / POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE, a file
# holding it) / POSTGRES_DB, the scripts in
# /docker-entrypoint-initdb.d run once on first start against a socket-only server, data under
# /var/lib/postgresql, then the real server on every address with scram-sha-256 over TCP.
set -eu
BIN=/usr/lib/postgresql/15/bin
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres /var/lib/postgresql "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
[ "${1:-}" = postgres ] && shift
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
        [ -z "${POSTGRES_PASSWORD:-}" ] || { echo "both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are set" >&2; exit 1; }
        POSTGRES_PASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")"  # not exported: no process inherits it
    fi
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
    export POSTGRES_USER="${POSTGRES_USER:-postgres}"
    export POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
    pwfile="$(mktemp)"
    printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
    "$BIN/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 > /dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    "$BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start > /dev/null
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -qc "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    for script in /docker-entrypoint-initdb.d/*; do
        case "$script" in
            *.sh) echo "initdb: running $script"; sh "$script" ;;
            *.sql) echo "initdb: running $script"; psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f "$script" ;;
            *) echo "initdb: ignoring $script" ;;
        esac
    done
    "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop > /dev/null
fi
exec "$BIN/postgres" -c listen_addresses='*' "$@"
