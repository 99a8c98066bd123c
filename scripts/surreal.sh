#!/usr/bin/env bash
# Development SurrealDB for txcoord: the Node.js server in devdb/surreal-server
# (embedded SurrealDB 3.0.2, rocksdb, sync=every) behind the standard /rpc
# WebSocket protocol, on 127.0.0.1.
#
#   scripts/surreal.sh up       install what is missing, start (idempotent), wait until healthy
#   scripts/surreal.sh down     stop (SIGTERM, then SIGKILL after a bound)
#   scripts/surreal.sh status   exit 0 if running and healthy, 3 if stopped, 1 if unhealthy
#   scripts/surreal.sh env      print the export lines the tests read
#
# Environment: TXCOORD_DATA_DIR (default <repo>/.data; this script uses its
# surreal/ folder), TXCOORD_SURREAL_PORT (default 58000),
# TXCOORD_SURREAL_START_TIMEOUT / TXCOORD_SURREAL_STOP_TIMEOUT (seconds, default 60 / 15).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA_DIR=${TXCOORD_DATA_DIR:-$REPO/.data}
PORT=${TXCOORD_SURREAL_PORT:-58000}
HOST=127.0.0.1
SERVER_DIR=$REPO/devdb/surreal-server
DIR=$DATA_DIR/surreal
PIDFILE=$DIR/server.pid
LOG=$DIR/server.log
START_TIMEOUT=${TXCOORD_SURREAL_START_TIMEOUT:-60}
STOP_TIMEOUT=${TXCOORD_SURREAL_STOP_TIMEOUT:-15}
NODE_MIN_MAJOR=18

say() { printf 'surreal: %s\n' "$*" >&2; }
die() { printf 'surreal: error: %s\n' "$*" >&2; exit 1; }

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"
	elif command -v sudo >/dev/null 2>&1; then sudo "$@"
	else die "need root to run: $* (install it yourself or run as root)"
	fi
}

ensure_node() {
	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
		say "installing nodejs and npm (apt-get)"
		as_root apt-get update -qq
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
	fi
	local major
	major=$(node -p 'process.versions.node.split(".")[0]')
	[ "$major" -ge "$NODE_MIN_MAJOR" ] || die "node $(node --version) is too old: need >= $NODE_MIN_MAJOR"
}

# ensure_deps runs npm ci when node_modules is missing or older than the lockfile.
ensure_deps() {
	local stamp=$SERVER_DIR/node_modules/.package-lock.json
	if [ -f "$stamp" ] && [ ! "$SERVER_DIR/package-lock.json" -nt "$stamp" ] &&
		[ -d "$SERVER_DIR/node_modules/@surrealdb/node/dist" ] && [ -d "$SERVER_DIR/node_modules/ws" ]; then
		return
	fi
	say "installing server dependencies (npm ci --legacy-peer-deps)"
	(cd "$SERVER_DIR" && npm ci --legacy-peer-deps --no-audit --no-fund --loglevel=error >&2) ||
		die "npm ci failed in $SERVER_DIR"
	touch "$stamp"
}

# our_pid prints the pid of this data dir's server if it is running.
our_pid() {
	[ -f "$PIDFILE" ] || return 1
	local pid
	pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	# Guard against a recycled pid: it must be node running our server.js.
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$SERVER_DIR/server.js" || return 1
	echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

healthy() {
	timeout 3 bash -c '
		exec 3<>"/dev/tcp/$0/$1" || exit 1
		printf "GET /health HTTP/1.0\r\nHost: %s\r\n\r\n" "$0" >&3
		IFS= read -r line <&3 || exit 1
		[[ "$line" == "HTTP/1."?" 200"* ]]' "$HOST" "$PORT" 2>/dev/null
}

cmd_up() {
	mkdir -p "$DIR"
	exec 9>"$DIR/.lock"
	flock -w 120 9 || die "another surreal.sh holds $DIR/.lock"
	local pid
	if pid=$(our_pid); then
		if wait_healthy "$pid"; then
			say "already running (pid $pid) on ws://$HOST:$PORT/rpc"
			return
		fi
		die "server pid $pid is running but not healthy on port $PORT; see $LOG (try: $0 down && $0 up)"
	fi
	if port_open; then
		die "port $PORT on $HOST is taken by another process ($(port_owner)); stop it or set TXCOORD_SURREAL_PORT"
	fi
	ensure_node
	ensure_deps
	rm -f "$PIDFILE"
	say "starting on ws://$HOST:$PORT/rpc, data $DIR/db, log $LOG"
	# setsid: a Ctrl-C in the terminal that ran `make` must not reach the server.
	setsid nohup node "$SERVER_DIR/server.js" --host "$HOST" --port "$PORT" --data "$DIR/db" \
		</dev/null >>"$LOG" 2>&1 9>&- &
	pid=$!
	echo "$pid" >"$PIDFILE"
	local t0=$SECONDS
	if ! wait_healthy "$pid"; then
		say "last lines of $LOG:"
		tail -n 20 "$LOG" >&2 || true
		kill -KILL "$pid" 2>/dev/null || true
		rm -f "$PIDFILE"
		die "server did not become healthy within ${START_TIMEOUT}s"
	fi
	say "up (pid $pid) in $((SECONDS - t0))s"
}

# wait_healthy polls /health until START_TIMEOUT; fails early if the process exits.
wait_healthy() {
	local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
	while [ "$SECONDS" -lt "$deadline" ]; do
		healthy && return 0
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.2
	done
	return 1
}

port_owner() {
	if command -v ss >/dev/null 2>&1; then
		ss -Hltnp "sport = :$PORT" 2>/dev/null | grep -o 'users:(([^)]*))' | head -n 1 || true
	else
		echo "unknown process"
	fi
}

cmd_down() {
	mkdir -p "$DIR"
	exec 9>"$DIR/.lock"
	flock -w 120 9 || die "another surreal.sh holds $DIR/.lock"
	local pid
	if ! pid=$(our_pid); then
		rm -f "$PIDFILE"
		say "not running"
		return
	fi
	say "stopping pid $pid"
	kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + STOP_TIMEOUT))
	while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
	if kill -0 "$pid" 2>/dev/null; then
		say "still running after ${STOP_TIMEOUT}s, sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	fi
	rm -f "$PIDFILE"
	say "stopped"
}

cmd_status() {
	local pid
	if ! pid=$(our_pid); then
		echo "surreal: stopped"
		return 3
	fi
	if healthy; then
		echo "surreal: running (pid $pid) on ws://$HOST:$PORT/rpc, data $DIR/db"
		return 0
	fi
	echo "surreal: running (pid $pid) but not healthy on port $PORT"
	return 1
}

cmd_env() {
	cat <<EOF
export TXCOORD_SURREAL_URL=ws://$HOST:$PORT/rpc
export TXCOORD_SURREAL_USER=root
export TXCOORD_SURREAL_PASS=root
export TXCOORD_SURREAL_NS=txcoord
export TXCOORD_SURREAL_DB=test
EOF
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
*)
	echo "usage: $0 up|down|status|env" >&2
	exit 2
	;;
esac
