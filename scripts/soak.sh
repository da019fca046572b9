#!/usr/bin/env bash
# The soak of docs/BENCHMARKS.md: `rideshare up` with its defaults (fresh data directory, the
# default ports), then `rideshare bench --mode soak` for SOAK_DURATION (default 30m) after a
# 2-minute warm-up. The report goes to stdout; the exit status is the soak's verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${SOAK_DURATION:-30m}
data=$(mktemp -d)
./bin/rideshare up --data "$data" >"$data/up.log" 2>&1 &
up=$!
trap 'kill "$up" 2>/dev/null; wait "$up" 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 90); do
	grep -q "rideshare is up" "$data/up.log" && break
	kill -0 "$up" 2>/dev/null || { cat "$data/up.log" >&2; exit 1; }
	sleep 1
done
grep -q "rideshare is up" "$data/up.log" || { echo "rideshare up did not come up" >&2; exit 1; }
./bin/rideshare bench --mode soak --duration "$duration" --warmup 2m --timeout 4h --quiet \
	--label "rideshare up defaults, 2-minute interval" "$@"
