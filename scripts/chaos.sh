#!/usr/bin/env bash
# The long chaos runs of docs/RELIABILITY.md: `rideshare chaos` for CHAOS_DURATION (default 30m)
# in each configuration — embedded NATS and coordinator; RabbitMQ + ZooKeeper from
# scripts/services.sh, each restarted during the run; workers as containers of the rideshare
# image (`make image`), one of them cut off the network now and then. Reports go to
# CHAOS_OUT (default ./chaos-results), one file per configuration; the exit status is 1 if any
# run found a violation or could not be made.
#   CHAOS_CONFIGS="embedded amqp-zk docker" (the default) chooses the configurations.
set -uo pipefail
cd "$(dirname "$0")/.."
duration=${CHAOS_DURATION:-30m}
out=${CHAOS_OUT:-./chaos-results}
mkdir -p "$out"
common=(--duration "$duration" --keys 100 --out "$out")
status=0
for config in ${CHAOS_CONFIGS:-embedded amqp-zk docker}; do
	case $config in
	embedded) args=() ;;
	amqp-zk)
		args=(--amqp amqp://guest:guest@127.0.0.1:5672/ --zk 127.0.0.1:2181 --zk-root "/rideshare-chaos-$(date +%s)"
			--restart-zookeeper "bash scripts/services.sh restart-zk") ;;
	docker) args=(--runtime docker --docker-image rideshare:latest --docker-stack rideshare-chaos --docker-network rideshare-chaos) ;;
	*) echo "chaos.sh: unknown configuration $config" >&2; exit 2 ;;
	esac
	echo "chaos.sh: $config for $duration" >&2
	if ./bin/rideshare chaos "${common[@]}" "${args[@]}" >"$out/$config.txt" 2>"$out/$config.log"; then
		echo "chaos.sh: $config: every check holds" >&2
	else
		echo "chaos.sh: $config: FAILED (see $out/$config.txt and $out/$config.log)" >&2
		status=1
	fi
	cat "$out/$config.txt"
done
exit $status
