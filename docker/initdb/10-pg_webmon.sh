#!/bin/bash
# First start only (docker-entrypoint-initdb.d): the extension, a least-privilege probe
# role, and the demo monitors.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v probe_password="${WEBMON_PROBE_PASSWORD:-probe}" <<'SQL'
CREATE EXTENSION IF NOT EXISTS pg_webmon;
CREATE ROLE webmon_probe LOGIN PASSWORD :'probe_password';
SELECT webmon.grant_probe('webmon_probe');
SELECT webmon.import_monitors('[
  {"url": "http://demo:8089/healthy",   "interval": 10},
  {"url": "http://demo:8089/slow",      "interval": 15, "timeout": 5000},
  {"url": "http://demo:8089/error",     "interval": 10},
  {"url": "http://demo:8089/flaky",     "interval": 5},
  {"url": "http://demo:8089/regex",     "interval": 10, "regex": "\"version\": \"[0-9.]+\""},
  {"url": "http://demo:8089/not-found", "interval": 30, "regex": "Not Found"}
]');
SQL
