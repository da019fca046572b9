#!/usr/bin/env bash
# services.sh — install (Debian packages) and run the services the tests need:
#   ZooKeeper on 127.0.0.1:2181 (own config: tickTime 500, so 1 s sessions are possible)
#   RabbitMQ  on 127.0.0.1:5672 (guest/guest)
# and installs Chromium (Debian's chromium), which the console's browser tests drive headless,
# and Debian's nats-server (2.9.10 on bookworm), the oldest server `--nats` is tested against:
# the tests start their own processes of it (its system service is not run).
#
# Usage (as root):
#   scripts/services.sh [start]     install what is missing, start what does not answer, wait
#   scripts/services.sh stop        stop both (only the ZooKeeper this script started)
#   scripts/services.sh restart-zk  kill and restart ZooKeeper only (fault tests)
#   scripts/services.sh stop-zk     kill ZooKeeper only; start-zk starts it again (outage tests)
#   scripts/services.sh status      say what answers
#
# Idempotent: running it twice leaves one ZooKeeper and one RabbitMQ running.
# RIDESHARE_SERVICES_WAIT bounds the wait for readiness (seconds, default 90).
set -euo pipefail

ZK_HOST=127.0.0.1
ZK_PORT=2181
ZK_HOME=/var/lib/rideshare-zk
ZK_CFG=$ZK_HOME/zoo.cfg
ZK_PIDFILE=$ZK_HOME/zookeeper.pid
ZK_LOG=$ZK_HOME/zookeeper.log
ZK_JARS=/usr/share/java/zookeeper.jar
RABBIT_HOST=127.0.0.1
RABBIT_PORT=5672
WAIT=${RIDESHARE_SERVICES_WAIT:-90}
PACKAGES=(zookeeper rabbitmq-server chromium nats-server)

log() { printf 'services: %s\n' "$*" >&2; }
die() {
	printf 'services: ERROR: %s\n' "$*" >&2
	exit 1
}

# tcp_open HOST PORT: something accepts connections there.
tcp_open() {
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# zk_word WORD: send a four-letter word to ZooKeeper, print the answer.
zk_word() {
	timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf %s "$3" >&3 && cat <&3' _ "$ZK_HOST" "$ZK_PORT" "$1" 2>/dev/null || true
}

zk_ready() {
	[[ "$(zk_word ruok)" == imok ]] || zk_word srvr | grep -q '^Mode:'
}

# Erlang's port mapper (epmd) is started by the first Erlang program that needs it, rabbitmqctl
# included, listening on every interface. Start it first, on loopback.
export ERL_EPMD_ADDRESS=127.0.0.1
epmd_loopback() {
	if ! tcp_open 127.0.0.1 4369 && command -v epmd >/dev/null; then
		epmd -address 127.0.0.1 -daemon >/dev/null 2>&1 9>&- || true
	fi
}

rabbit_ready() {
	command -v rabbitmqctl >/dev/null || return 1
	epmd_loopback
	rabbitmqctl -q status >/dev/null 2>&1 9>&-
}

require_root() {
	[[ $(id -u) -eq 0 ]] || die "run as root (needs to $1)"
}

# ---------------------------------------------------------------- install

install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if ((${#missing[@]} == 0)) && command -v java >/dev/null; then
		return 0
	fi
	require_root "install ${missing[*]}"
	log "installing ${missing[*]} (apt)"
	# Refresh the package lists only when they do not know the packages.
	if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
		log "apt-get update"
		apt-get update -q >/dev/null || die "apt-get update failed"
	fi
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; then
		log "install failed; refreshing package lists and retrying"
		apt-get update -q >/dev/null || die "apt-get update failed"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
			die "apt-get install ${missing[*]} failed"
	fi
	command -v java >/dev/null || die "java not found after installing zookeeper"
	command -v chromium >/dev/null || die "chromium not found after installing it"
	[[ -x /usr/sbin/nats-server ]] || die "/usr/sbin/nats-server not found after installing nats-server"
	# The package enables a system service on port 4222; the tests run their own servers.
	if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
		systemctl disable --now nats-server >/dev/null 2>&1 || true
	fi
}

# ---------------------------------------------------------------- ZooKeeper

# alive PID: the process runs (a zombie waiting for its reaper does not count).
alive() {
	kill -0 "$1" 2>/dev/null && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null
}

# zk_pid: print the PID of the ZooKeeper this script started, if it runs.
zk_pid() {
	local pid
	if [[ -r $ZK_PIDFILE ]]; then
		pid=$(<"$ZK_PIDFILE")
		if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$ZK_CFG"; then
			echo "$pid"
			return 0
		fi
	fi
	# The pid file may be gone while the process lives: look for our own config path.
	for pid in $(ls /proc | grep -E '^[0-9]+$'); do
		if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "QuorumPeerMain $ZK_CFG"; then
			echo "$pid"
			return 0
		fi
	done
	return 1
}

write_zk_config() {
	mkdir -p "$ZK_HOME/data"
	cat >"$ZK_CFG.tmp" <<EOF
# Written by scripts/services.sh — ZooKeeper for RideShare tests. Edits are overwritten.
tickTime=500
# Sessions may last from 2 to 20 ticks: 1 s to 10 s.
minSessionTimeout=1000
maxSessionTimeout=10000
initLimit=10
syncLimit=5
dataDir=$ZK_HOME/data
clientPort=$ZK_PORT
clientPortAddress=$ZK_HOST
maxClientCnxns=0
4lw.commands.whitelist=ruok,srvr,stat
admin.enableServer=false
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
	mv "$ZK_CFG.tmp" "$ZK_CFG"
}

zk_start() {
	if zk_pid >/dev/null; then
		log "ZooKeeper (pid $(zk_pid)) is already running"
		return 0
	fi
	if tcp_open "$ZK_HOST" "$ZK_PORT"; then
		log "something already answers on $ZK_HOST:$ZK_PORT; using it as ZooKeeper"
		return 0
	fi
	require_root "start ZooKeeper"
	[[ -r $ZK_JARS ]] || die "$ZK_JARS missing (is the zookeeper package installed?)"
	write_zk_config
	local cp=$ZK_JARS
	[[ -r /usr/share/java/slf4j-simple.jar ]] && cp=$cp:/usr/share/java/slf4j-simple.jar
	log "starting ZooKeeper on $ZK_HOST:$ZK_PORT (config $ZK_CFG, log $ZK_LOG)"
	# setsid: the server outlives this script and its terminal.
	setsid java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
		-Dzookeeper.log.dir="$ZK_HOME" \
		-Dorg.slf4j.simpleLogger.showDateTime=true \
		-Dorg.slf4j.simpleLogger.dateTimeFormat="yyyy-MM-dd'T'HH:mm:ss.SSS" \
		-cp "$cp" org.apache.zookeeper.server.quorum.QuorumPeerMain "$ZK_CFG" \
		>>"$ZK_LOG" 2>&1 </dev/null 9>&- &
	echo $! >"$ZK_PIDFILE"
}

# zk_stop [SIGNAL]: stop our ZooKeeper with SIGNAL (default TERM), then KILL after 10 s.
zk_stop() {
	local sig=${1:-TERM} pid i
	if ! pid=$(zk_pid); then
		if tcp_open "$ZK_HOST" "$ZK_PORT"; then
			log "ZooKeeper on $ZK_HOST:$ZK_PORT was not started by this script; leaving it"
		else
			log "ZooKeeper is not running"
		fi
		rm -f "$ZK_PIDFILE"
		return 0
	fi
	require_root "stop ZooKeeper"
	log "stopping ZooKeeper (pid $pid, SIG$sig)"
	kill "-$sig" "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	if alive "$pid"; then
		log "ZooKeeper (pid $pid) ignored SIG$sig for 10 s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.2
	fi
	rm -f "$ZK_PIDFILE"
}

zk_wait() {
	local deadline=$1 pid
	until zk_ready; do
		if pid=$(zk_pid); then :; elif ! tcp_open "$ZK_HOST" "$ZK_PORT"; then
			tail -n 20 "$ZK_LOG" >&2 2>/dev/null || true
			die "ZooKeeper exited during startup (log: $ZK_LOG)"
		fi
		if ((SECONDS >= deadline)); then
			tail -n 20 "$ZK_LOG" >&2 2>/dev/null || true
			die "ZooKeeper does not answer on $ZK_HOST:$ZK_PORT after ${WAIT}s (log: $ZK_LOG)"
		fi
		sleep 0.3
	done
	log "ZooKeeper answers on $ZK_HOST:$ZK_PORT"
}

# ---------------------------------------------------------------- RabbitMQ

rabbit_start() {
	if tcp_open "$RABBIT_HOST" "$RABBIT_PORT"; then
		log "RabbitMQ already answers on $RABBIT_HOST:$RABBIT_PORT"
		return 0
	fi
	if rabbit_ready; then
		log "RabbitMQ node is running (AMQP listener not open yet)"
		return 0
	fi
	require_root "start RabbitMQ"
	log "starting RabbitMQ on $RABBIT_HOST:$RABBIT_PORT"
	epmd_loopback
	# Loopback only: AMQP and Erlang distribution.
	RABBITMQ_NODE_IP_ADDRESS=$RABBIT_HOST \
		RABBITMQ_NODE_PORT=$RABBIT_PORT \
		RABBITMQ_DIST_PORT=25672 \
		RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
		rabbitmq-server -detached 9>&- || die "rabbitmq-server -detached failed"
}

rabbit_stop() {
	if ! rabbit_ready && ! tcp_open "$RABBIT_HOST" "$RABBIT_PORT"; then
		log "RabbitMQ is not running"
		return 0
	fi
	require_root "stop RabbitMQ"
	log "stopping RabbitMQ"
	rabbitmqctl -q stop >/dev/null 2>&1 9>&- || log "rabbitmqctl stop failed"
	# Stop the port mapper too once no node is registered with it (the node deregisters a moment
	# after rabbitmqctl stop returns); the next start then runs it on loopback.
	local i
	if command -v epmd >/dev/null; then
		for ((i = 0; i < 50; i++)); do
			epmd -names 2>/dev/null | grep -q '^name ' || break
			sleep 0.2
		done
		epmd -names 2>/dev/null | grep -q '^name ' || epmd -kill >/dev/null 2>&1 || true
	fi
}

rabbit_wait() {
	local deadline=$1
	until rabbit_ready && tcp_open "$RABBIT_HOST" "$RABBIT_PORT"; do
		if ((SECONDS >= deadline)); then
			tail -n 20 /var/log/rabbitmq/rabbit@*.log >&2 2>/dev/null || true
			die "RabbitMQ not ready on $RABBIT_HOST:$RABBIT_PORT after ${WAIT}s (logs: /var/log/rabbitmq/)"
		fi
		sleep 1
	done
	log "RabbitMQ answers on $RABBIT_HOST:$RABBIT_PORT"
}

# ---------------------------------------------------------------- main

cmd=${1:-start}
# One invocation at a time (test packages may run it concurrently). The servers started below
# must not inherit the lock's descriptor (9>&-), or they would hold it for good.
if [[ $cmd != status && $(id -u) -eq 0 ]] && command -v flock >/dev/null; then
	exec 9>/run/lock/rideshare-services.lock
	flock -w 180 9 || die "another scripts/services.sh holds /run/lock/rideshare-services.lock"
fi
case $cmd in
start)
	install_packages
	zk_start
	rabbit_start
	deadline=$((SECONDS + WAIT))
	zk_wait "$deadline"
	rabbit_wait "$deadline"
	log "ready after ${SECONDS}s"
	;;
stop)
	zk_stop
	rabbit_stop
	;;
restart-zk)
	# A crash and a restart: SIGKILL loses nothing ZooKeeper acknowledged (its log is synced
	# before it answers) and keeps the outage short, so sessions can survive it.
	zk_stop KILL
	zk_start
	zk_wait $((SECONDS + WAIT))
	;;
stop-zk)
	zk_stop KILL
	;;
start-zk)
	zk_start
	zk_wait $((SECONDS + WAIT))
	;;
status)
	rc=0
	if zk_ready; then log "ZooKeeper: up on $ZK_HOST:$ZK_PORT"; else log "ZooKeeper: down"; rc=1; fi
	if rabbit_ready; then log "RabbitMQ: up"; else log "RabbitMQ: down"; rc=1; fi
	exit $rc
	;;
*)
	die "usage: $0 [start|stop|restart-zk|stop-zk|start-zk|status]"
	;;
esac
