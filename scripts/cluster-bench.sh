#!/usr/bin/env bash
# Measures a three-node cluster (`rideshare up --orchestrators 3`) on this machine, each run on a
# fresh stack: create ride and list rides at 32 clients, and the slowest create ride when a node
# is SIGKILLed 10 s into a create-ride run. Results go to stdout; docs/BENCHMARKS.md records them.
#
#   bash scripts/cluster-bench.sh rate create-ride|list-rides [up flags...]
#   bash scripts/cluster-bench.sh kill supervisor|log-leader|other [up flags...]
#
# kill supervisor takes the supervising node that does not lead the sync log (exit 2 if the
# one node does both), other a node that does neither.
# RIDESHARE_NODES=1 runs the rate on one node instead (the single-node figure beside it).
# Ports 18080-18085 on 127.0.0.1 must be free. Needs bin/rideshare (make build), curl and jq.
# RIDESHARE_UP_BIN runs the stack from another build (an older commit's, to compare); the load
# still comes from bin/rideshare.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?mode: rate or kill}; what=${2:?}; shift 2
bin=./bin/rideshare
up_bin=${RIDESHARE_UP_BIN:-$bin}
data=$(mktemp -d)
log=$data/up.log
nodes=${RIDESHARE_NODES:-3}
"$up_bin" up --data "$data" --orchestrators "$nodes" --gateway 127.0.0.1:18080 --users 127.0.0.1:18081 \
	--rides 127.0.0.1:18082 --orchestrator 127.0.0.1:18083 --log-level warn "$@" >"$log" 2>&1 &
up=$!
cleanup() { kill "$up" 2>/dev/null || true; wait "$up" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1200); do
	grep -q 'rideshare is up' "$log" && break
	kill -0 "$up" 2>/dev/null || { cat "$log"; exit 1; }
	sleep 0.1 # polling the start's own message: no event to wait on across processes
done
grep -q 'rideshare is up' "$log" || { echo "not up in 120 s"; cat "$log"; exit 1; }
orchs=http://127.0.0.1:18083
[[ $nodes == 1 ]] || orchs=$orchs,http://127.0.0.1:18084,http://127.0.0.1:18085
B=("$bin" bench --gateway http://127.0.0.1:18080 --orchestrator "$orchs")
view() { curl -fsS --max-time 5 "$1/api/v1/cluster"; }
case $mode in
rate)
	"${B[@]}" --only "$what" 2>/dev/null
	;;
kill)
	"${B[@]}" --only create-ride --duration 30s --format json 2>/dev/null >"$data/report.json" &
	bench=$!
	sleep 10 # the kill comes 10 s into the run, by design
	v=$(view http://127.0.0.1:18083 || view http://127.0.0.1:18084)
	case $what in
	supervisor) sel='map(select(.supervisor and (.log_leader | not))) | .[0]' ;;
	log-leader) sel='map(select(.log_leader)) | .[0]' ;;
	other) sel='map(select((.supervisor or .log_leader) | not)) | .[0]' ;;
	esac
	victim=$(jq -c "$sel" <<<"$v")
	if [[ $victim == null ]]; then
		echo "no node is only the $what here (the supervisor leads the log): run again"
		exit 2
	fi
	echo "cluster: $(jq -c 'map({name, supervisor, log_leader})' <<<"$v")"
	echo "killing: $victim"
	kill -KILL "$(jq -r .pid <<<"$victim")"
	wait "$bench" || true
	jq -c '.' "$data/report.json" | head -c 4000; echo
	;;
esac
