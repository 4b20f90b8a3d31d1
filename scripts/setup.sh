#!/usr/bin/env bash
# Installs what building and testing pg_webmon needs on Debian 12, idempotently:
# a second run only checks and returns in a second or two.
set -euo pipefail

PGRX_VERSION=0.18.1
PG_MAJOR=15
PACKAGES=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-contrib libclang-dev clang
  pkg-config libssl-dev build-essential sudo docker-compose ca-certificates curl faketime)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's postgresql package starts a system cluster on 5432; we never use it, and it
# is harmless, so it is left alone.

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; else
    echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; fi
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy 2>/dev/null || true

if [ "$(cargo pgrx --version 2>/dev/null || true)" != "cargo-pgrx $PGRX_VERSION" ]; then
  echo "setup: installing cargo-pgrx $PGRX_VERSION (takes ~6 minutes once)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
if ! grep -qs "pg$PG_MAJOR = \"$PG_CONFIG\"" "$HOME/.pgrx/config.toml"; then
  cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG"
fi
echo "setup: ok"
