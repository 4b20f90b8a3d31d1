#!/usr/bin/env bash
# Everything CI runs: format, lint, unit tests, pg tests (cargo pgrx test), the extension
# installed for real, end-to-end tests (real cluster + real probe), and the compose file.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

SUDO=""; RUNAS=()
if [ "$(id -u)" -eq 0 ]; then
  # PostgreSQL refuses to run as root: the test clusters run as postgres.
  PGDATA_DIR=/tmp/pg_webmon-pgrx-test
  install -d -o postgres -g postgres "$PGDATA_DIR"
  RUNAS=(--runas postgres --pgdata "$PGDATA_DIR")
elif sudo -n true 2>/dev/null; then
  # A normal user with sudo: pgrx installs into the system directories with sudo.
  SUDO="--sudo"
  PGDATA_DIR="$HOME/.cache/pg_webmon-pgrx-test"
  mkdir -p "$PGDATA_DIR"
  RUNAS=(--runas "$(id -un)" --pgdata "$PGDATA_DIR")
fi

step() { echo; echo "==> $*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "unit tests (shared rules, probe)"
cargo test -p webmon-core -p webmon-worker

step "cargo pgrx test pg15 (extension unit tests, SQL tests, scheduler worker)"
(cd pg_webmon && cargo pgrx test pg15 "${RUNAS[@]}")

step "install the extension (the test build left test-only SQL installed)"
(cd pg_webmon && cargo pgrx install --pg-config /usr/lib/postgresql/15/bin/pg_config $SUDO)
# The upgrade tests install each released version as shipped, then update it: their install
# scripts too (sql/pg_webmon--<version>.sql; the upgrade scripts are installed by pgrx).
EXTDIR="$(/usr/lib/postgresql/15/bin/pg_config --sharedir)/extension"
${SUDO:+sudo} install -m 644 sql/pg_webmon--[0-9]*.[0-9]*.[0-9]*.sql "$EXTDIR/"

step "end-to-end tests (real cluster, real webmon-worker, local HTTP/TLS targets)"
cargo build -p webmon-worker
cargo test -p webmon-tests -- --test-threads 2

step "docker-compose.yml validates"
docker-compose -f docker-compose.yml config -q
echo "compose: ok"

echo; echo "all tests passed"
