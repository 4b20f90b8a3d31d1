#!/usr/bin/env bash
# `make bench`: the benchmark table of the README (takes ~50 minutes; `--scale 0.2` for a
# quick look, `--only 1,4` for some scenarios). Also the queue cost figures (bench_queue),
# alert latency (bench_alerts) and uptime over months at 100,000 monitors (bench_rollups).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
SUDO=""
[ "$(id -u)" -ne 0 ] && sudo -n true 2>/dev/null && SUDO="--sudo"
(cd pg_webmon && cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config $SUDO)
cargo build --release -p webmon-worker -p webmon-tests
./target/release/bench_queue
./target/release/bench_alerts
./target/release/bench_rollups
./target/release/bench "$@"
