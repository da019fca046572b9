#!/usr/bin/env bash
# host-services.sh — RabbitMQ, ZooKeeper and Prometheus for the Docker deployments on a machine
# that cannot pull their images (no registry): they run on the host, from Debian's packages,
# and the containers reach them at host.docker.internal (extra_hosts: host-gateway).
#
#   ZooKeeper  127.0.0.1:2181  (scripts/services.sh)  ─┐ forwarded (socat) from the Docker
#   RabbitMQ   127.0.0.1:5672  (scripts/services.sh)  ─┘ bridge's gateway, where host-gateway points
#   Prometheus 127.0.0.1:9090  scraping the published ports 127.0.0.1:8080-8083
#   Grafana    not packaged by Debian: only with the images (docker-compose --profile registry)
#
# Usage (as root):
#   scripts/host-services.sh [start]   install what is missing, start what is not running, wait
#   scripts/host-services.sh stop      stop the forwarders and Prometheus started here
#                                      (ZooKeeper and RabbitMQ: scripts/services.sh stop)
#   scripts/host-services.sh status    say what answers
#
# ZooKeeper and RabbitMQ listen on loopback only (scripts/services.sh); the forwarders listen on
# the Docker bridge's gateway address only, which just the host and its containers reach. The
# RabbitMQ guest user may log in from loopback only, and forwarded connections come from there.
# Compose's stack gets a virtual host of its own, "rideshare", apart from the tests' "/".
#
# Environment: RIDESHARE_HOST_PROMETHEUS=0 skips Prometheus; RIDESHARE_PROMETHEUS_LISTEN
# (default 127.0.0.1:9090); RIDESHARE_HOST_GATEWAY overrides the forwarders' address.
set -euo pipefail

cd "$(dirname "$0")/.."
STATE=/var/lib/rideshare-host
PROM_LISTEN=${RIDESHARE_PROMETHEUS_LISTEN:-127.0.0.1:9090}
PROM_CONFIG=$STATE/prometheus.yml
FORWARDED_PORTS=(2181 5672)
VHOST=rideshare

log() { printf 'host-services: %s\n' "$*" >&2; }
die() {
	printf 'host-services: ERROR: %s\n' "$*" >&2
	exit 1
}

tcp_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null; }

require_root() { [[ $(id -u) -eq 0 ]] || die "run as root (needs to $1)"; }

apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	require_root "install ${missing[*]}"
	log "installing ${missing[*]} (apt)"
	if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
		apt-get update -q >/dev/null || die "apt-get update failed"
	fi
	# policy-rc.d-less hosts: the packages' own services are not needed (ours run below).
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
		die "apt-get install ${missing[*]} failed"
}

# gateway: the address `host-gateway` stands for: the default bridge's gateway (docker0).
gateway() {
	if [[ -n ${RIDESHARE_HOST_GATEWAY:-} ]]; then
		echo "$RIDESHARE_HOST_GATEWAY"
		return
	fi
	local gw dev
	gw=$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' 2>/dev/null) ||
		die "docker network inspect bridge failed: is the Docker Engine running?"
	gw=$(awk '{print $1}' <<<"$gw")
	if [[ -z $gw ]]; then
		# The default bridge often lists no gateway: it is the address of its interface.
		dev=$(docker network inspect bridge -f '{{index .Options "com.docker.network.bridge.name"}}')
		gw=$(ip -4 -o addr show dev "${dev:-docker0}" 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')
	fi
	[[ -n $gw ]] || die "cannot tell the Docker bridge's gateway address; set RIDESHARE_HOST_GATEWAY"
	echo "$gw"
}

# our_pid NAME: the PID in $STATE/NAME.pid if that process runs and is ours (its command line
# holds MARK).
our_pid() {
	local f=$STATE/$1.pid pid
	[[ -r $f ]] || return 1
	pid=$(<"$f")
	[[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$2" && echo "$pid"
}

stop_pid() { # NAME MARK
	local pid i
	if pid=$(our_pid "$1" "$2"); then
		log "stopping $1 (pid $pid)"
		kill "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$STATE/$1.pid"
}

forward_start() {
	local gw=$1 port name mark
	apt_install socat
	for port in "${FORWARDED_PORTS[@]}"; do
		name=forward-$port
		mark="TCP-LISTEN:$port,bind=$gw,"
		if our_pid "$name" "$mark" >/dev/null; then
			continue
		fi
		if tcp_open "$gw" "$port"; then
			log "something already answers on $gw:$port; leaving it"
			continue
		fi
		log "forwarding $gw:$port → 127.0.0.1:$port"
		setsid socat "TCP-LISTEN:$port,bind=$gw,reuseaddr,fork,backlog=128" "TCP:127.0.0.1:$port" \
			</dev/null >>"$STATE/$name.log" 2>&1 9>&- &
		echo $! >"$STATE/$name.pid"
	done
}

rabbit_vhost() {
	if ! rabbitmqctl -q list_vhosts 2>/dev/null | grep -qx "$VHOST"; then
		log "creating RabbitMQ virtual host $VHOST for guest"
		rabbitmqctl -q add_vhost "$VHOST" >/dev/null
	fi
	rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null
}

prometheus_start() {
	[[ ${RIDESHARE_HOST_PROMETHEUS:-1} == 0 ]] && return 0
	if our_pid prometheus "--config.file=$PROM_CONFIG" >/dev/null; then
		return 0
	fi
	if tcp_open "${PROM_LISTEN%:*}" "${PROM_LISTEN##*:}"; then
		log "something already answers on $PROM_LISTEN; not starting Prometheus"
		return 0
	fi
	apt_install prometheus
	# The compose file's scrape targets (service:80) as the host sees them (published ports).
	sed -e 's/"gateway:80"/"127.0.0.1:8080"/' -e 's/"users:80"/"127.0.0.1:8081"/' \
		-e 's/"rides:80"/"127.0.0.1:8082"/' -e 's/"orchestrator:80"/"127.0.0.1:8083"/' \
		-e "s/\"localhost:9090\"/\"$PROM_LISTEN\"/" \
		deploy/prometheus/prometheus.yml >"$PROM_CONFIG"
	log "starting Prometheus on $PROM_LISTEN (config $PROM_CONFIG)"
	setsid prometheus --config.file="$PROM_CONFIG" --storage.tsdb.path="$STATE/prometheus" \
		--web.listen-address="$PROM_LISTEN" </dev/null >>"$STATE/prometheus.log" 2>&1 9>&- &
	echo $! >"$STATE/prometheus.pid"
}

status() {
	local gw rc=0 port
	bash scripts/services.sh status || rc=1
	gw=$(gateway)
	for port in "${FORWARDED_PORTS[@]}"; do
		if tcp_open "$gw" "$port"; then log "$gw:$port: answers (containers: host.docker.internal:$port)"; else
			log "$gw:$port: down"
			rc=1
		fi
	done
	if tcp_open "${PROM_LISTEN%:*}" "${PROM_LISTEN##*:}"; then log "Prometheus: up on $PROM_LISTEN"; else log "Prometheus: down"; fi
	return $rc
}

cmd=${1:-start}
mkdir -p "$STATE"
case $cmd in
start)
	require_root "start services"
	command -v docker >/dev/null || die "docker not found"
	bash scripts/services.sh start
	rabbit_vhost
	gw=$(gateway)
	forward_start "$gw"
	prometheus_start
	for port in "${FORWARDED_PORTS[@]}"; do
		for ((i = 0; i < 50; i++)); do
			tcp_open "$gw" "$port" && break
			sleep 0.1
		done
		tcp_open "$gw" "$port" || die "the forwarder on $gw:$port does not answer (log: $STATE/forward-$port.log)"
	done
	log "ready: containers reach ZooKeeper at host.docker.internal:2181 and RabbitMQ at amqp://guest:guest@host.docker.internal:5672/$VHOST"
	;;
stop)
	for port in "${FORWARDED_PORTS[@]}"; do
		stop_pid "forward-$port" "TCP-LISTEN:$port,"
	done
	stop_pid prometheus "--config.file=$PROM_CONFIG"
	;;
status)
	status
	;;
*)
	die "usage: $0 [start|stop|status]"
	;;
esac
