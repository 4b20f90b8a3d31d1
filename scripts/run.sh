#!/usr/bin/env bash
# `make run`: a project-local PostgreSQL cluster with pg_webmon, the demo target, the
# example monitors and the probe, with a live status table. Ctrl-C stops everything.
# A second run reuses the cluster and its data.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

RUN_DIR=${WEBMON_RUN_DIR:-$ROOT/.run}
PORT=${WEBMON_PORT:-54329}
DEMO_LISTEN=${WEBMON_DEMO_LISTEN:-127.0.0.1:8089}
CONFIG=${WEBMON_CONFIG:-examples/urls.config.example.json}
PG_BIN=/usr/lib/postgresql/15/bin
DATA=$RUN_DIR/pgdata

SUDO=""; AS_PG=()
if [ "$(id -u)" -eq 0 ]; then
  AS_PG=(runuser -u postgres --)
elif sudo -n true 2>/dev/null; then
  SUDO="--sudo"
fi

echo "==> building and installing pg_webmon (release)"
(cd pg_webmon && cargo pgrx install --release --pg-config "$PG_BIN/pg_config" $SUDO)
cargo build --release -p webmon-worker
WORKER=$ROOT/target/release/webmon-worker

mkdir -p "$RUN_DIR"
if [ "$(id -u)" -eq 0 ]; then
  chown postgres:postgres "$RUN_DIR"
  # The postgres user must be able to reach the data directory.
  if ! runuser -u postgres -- test -w "$RUN_DIR"; then
    echo "run: $RUN_DIR is not reachable by the postgres user; set WEBMON_RUN_DIR" >&2; exit 1
  fi
fi
if [ ! -f "$DATA/PG_VERSION" ]; then
  echo "==> creating the cluster in $DATA (port $PORT)"
  "${AS_PG[@]}" "$PG_BIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
  cat >> "$DATA/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$RUN_DIR'
shared_preload_libraries = 'pg_webmon'
pg_webmon.database = 'webmon'
CONF
fi
if ! "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -l "$RUN_DIR/postgres.log" -w start >/dev/null
fi

PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -tc "SELECT 1 FROM pg_database WHERE datname = 'webmon'" | grep -q 1 \
  || "${PSQL[@]}" -d postgres -c "CREATE DATABASE webmon"
# A kept cluster from an older version is upgraded in place (its data stays); a failure stops here.
"${PSQL[@]}" -d webmon -c "SET client_min_messages = warning" \
  -c "CREATE EXTENSION IF NOT EXISTS pg_webmon" -c "ALTER EXTENSION pg_webmon UPDATE"
echo "==> pg_webmon $("${PSQL[@]}" -d webmon -Atc "SELECT extversion FROM pg_extension WHERE extname = 'pg_webmon'") in database webmon"

DEMO_PID=""; PROBE_PID=""; STATUS_PID=""
cleanup() {
  trap - INT TERM EXIT
  echo; echo "==> stopping"
  [ -n "$STATUS_PID" ] && kill -TERM "$STATUS_PID" 2>/dev/null || true
  [ -n "$PROBE_PID" ] && kill -TERM "$PROBE_PID" 2>/dev/null && wait "$PROBE_PID" 2>/dev/null || true
  [ -n "$DEMO_PID" ] && kill -TERM "$DEMO_PID" 2>/dev/null && wait "$DEMO_PID" 2>/dev/null || true
  "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
  echo "stopped; data kept in $DATA"
}
trap cleanup INT TERM EXIT

"$WORKER" demo-target --listen "$DEMO_LISTEN" >"$RUN_DIR/demo.log" 2>&1 &
DEMO_PID=$!
DB="host=127.0.0.1 port=$PORT user=postgres dbname=webmon"
"$WORKER" --database-url "$DB" import "$CONFIG"
"$WORKER" --database-url "$DB" --probe-name "${WEBMON_PROBE_NAME:-local}" run >"$RUN_DIR/probe.log" 2>&1 &
PROBE_PID=$!

cat <<INFO

pg_webmon is running: PostgreSQL on 127.0.0.1:$PORT (data in $DATA), demo target on $DEMO_LISTEN,
probe log in $RUN_DIR/probe.log. Connect with:

  psql -h 127.0.0.1 -p $PORT -U postgres webmon

and try:

  SELECT * FROM webmon.monitor_status;
  SELECT * FROM webmon.uptime('1 hour');
  INSERT INTO webmon.monitors (url, check_interval) VALUES ('http://$DEMO_LISTEN/delay/250', '3 seconds');

Ctrl-C stops the probe, the demo target and the cluster.
INFO
sleep 2
# The live table; it ends on Ctrl-C (the trap stops everything).
"$WORKER" --database-url "$DB" status --watch 2 &
STATUS_PID=$!
wait "$STATUS_PID" || true
