#!/bin/sh
# Starts Postgres in the deskhub/postgres image (Debian's postgresql-15; run by tini). The
# official postgres image's contract, so docker-compose.yml takes either image: on the first
# start, an empty PGDATA (default /var/lib/postgresql/data, the volume) gets a cluster whose
# superuser is POSTGRES_USER (default postgres) with POSTGRES_PASSWORD, and a database
# POSTGRES_DB (default: the user's name). Later starts use what is there; the variables are then
# not read (changing POSTGRES_PASSWORD does not change the role's password: ALTER ROLE does).
# Connections over TCP need the password (scram-sha-256); inside the container, on the unix
# socket, the operating system user postgres is trusted (pg_isready, psql -U ... for repairs).
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA

if [ "$(id -u)" = 0 ]; then
  # A volume that Docker did not fill from the image (a bind mount) may belong to root.
  mkdir -p "$PGDATA" /run/postgresql
  chown postgres:postgres "$PGDATA" /run/postgresql
  chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$0" "$@"
fi

fail() {
  echo "deskhub-postgres: $*" >&2
  exit 1
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -n "${POSTGRES_PASSWORD:-}" ] || fail "POSTGRES_PASSWORD must be set to initialise the database in $PGDATA"
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  # Plain SQL identifiers only: they are written into SQL below without quoting tricks.
  for name in "$user" "$db"; do
    case "$name" in
      [a-z_]*) ;;
      *) fail "POSTGRES_USER and POSTGRES_DB must start with a lowercase letter or _ (got \"$name\")" ;;
    esac
    case "$name" in
      *[!a-z0-9_]*) fail "POSTGRES_USER and POSTGRES_DB may hold lowercase letters, digits and _ only (got \"$name\")" ;;
    esac
  done
  # PGDATA may be a volume's root, with lost+found in it: initdb wants an empty folder.
  if [ -n "$(ls -A "$PGDATA")" ]; then
    fail "$PGDATA holds files but no database (PG_VERSION missing); empty it or point PGDATA at an empty folder"
  fi
  echo "deskhub-postgres: initialising $PGDATA (user $user, database $db)"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  # Published by compose on the host's loopback only; the password guards every TCP connection.
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  if [ "$db" != postgres ]; then
    echo "CREATE DATABASE $db OWNER $user;" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
fi

exec postgres -D "$PGDATA" "$@"
