# PostgreSQL for the store's tests: a private cluster on 127.0.0.1, on a free port, in a temp dir.
# Sourced by .ci/run (set -euo pipefail): it installs PostgreSQL if missing, starts the cluster as
# the `postgres` user (initdb refuses root), creates a user with a password and a database, and
# exports AUTOPETL_TEST_PG_URL and AUTOPETL_REQUIRE_PG=1 (the PostgreSQL tests then fail instead of
# skipping). It fails loudly, with the server log, when the cluster cannot start. The cluster is
# stopped and removed when the sourcing shell exits; AUTOPETL_PG_KEEP=1 leaves it running (local
# work: the stop command is printed).

_autopetl_pg_fail() {
  echo "postgres.sh: $*" >&2
  if [ -n "${_autopetl_pg_dir:-}" ] && [ -f "$_autopetl_pg_dir/server.log" ]; then
    echo "--- server log ---" >&2
    cat "$_autopetl_pg_dir/server.log" >&2
  fi
  return 1
}

_autopetl_pg_start() {
  local bin port password as_pg
  if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    echo "postgres.sh: installing postgresql (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  [ -x "$bin/initdb" ] || { _autopetl_pg_fail "no initdb under $bin"; return 1; }

  # initdb and postgres refuse to run as root: run them as the postgres user when we are root.
  if [ "$(id -u)" = 0 ]; then
    as_pg="runuser -u postgres --"
  else
    as_pg=""
  fi

  _autopetl_pg_dir=$(mktemp -d /tmp/autopetl-pg.XXXXXX)
  chmod 755 "$_autopetl_pg_dir"
  [ -z "$as_pg" ] || chown postgres: "$_autopetl_pg_dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')

  $as_pg "$bin/initdb" -D "$_autopetl_pg_dir/data" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$_autopetl_pg_dir/initdb.log" 2>&1 \
    || { cat "$_autopetl_pg_dir/initdb.log" >&2; _autopetl_pg_fail "initdb failed"; return 1; }
  # fsync off: a throwaway test cluster needs no crash safety, and tests run faster without it.
  $as_pg "$bin/pg_ctl" -D "$_autopetl_pg_dir/data" -l "$_autopetl_pg_dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $_autopetl_pg_dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null || { _autopetl_pg_fail "the server did not start on 127.0.0.1:$port"; return 1; }
  _autopetl_pg_stop_cmd="$as_pg $bin/pg_ctl -D $_autopetl_pg_dir/data -m fast stop"

  $as_pg "$bin/psql" -h "$_autopetl_pg_dir" -p "$port" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE autopetl LOGIN CREATEDB PASSWORD '$password'" \
    -c "CREATE DATABASE autopetl_test OWNER autopetl" >/dev/null \
    || { _autopetl_pg_fail "cannot create the test user and database"; return 1; }

  export AUTOPETL_TEST_PG_URL="postgresql+psycopg://autopetl:$password@127.0.0.1:$port/autopetl_test"
  export AUTOPETL_REQUIRE_PG=1
  echo "postgres.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $_autopetl_pg_dir)"
}

_autopetl_pg_stop() {
  [ -n "${_autopetl_pg_stop_cmd:-}" ] && $_autopetl_pg_stop_cmd >/dev/null 2>&1 || true
  [ -n "${_autopetl_pg_dir:-}" ] && rm -rf "$_autopetl_pg_dir"
  return 0
}

_autopetl_pg_start
if [ "${AUTOPETL_PG_KEEP:-0}" = 1 ]; then
  echo "postgres.sh: left running; stop it with: $_autopetl_pg_stop_cmd && rm -rf $_autopetl_pg_dir"
else
  # Keep any EXIT trap the sourcing shell already set, and run ours first.
  _autopetl_pg_prev_trap=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")
  # shellcheck disable=SC2064
  trap "_autopetl_pg_stop${_autopetl_pg_prev_trap:+; $_autopetl_pg_prev_trap}" EXIT
fi
