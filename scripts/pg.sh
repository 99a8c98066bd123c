#!/usr/bin/env bash
# Development PostgreSQL 15 for txcoord: a private cluster on 127.0.0.1 with
# max_prepared_transactions = 128, run as the OS user txcoord (PostgreSQL
# refuses to run as root), databases txcoord_a and txcoord_b, superuser role
# txcoord, trust authentication over TCP from 127.0.0.1 only, no Unix socket.
#
#   scripts/pg.sh up       install what is missing, init, start (idempotent), wait until ready
#   scripts/pg.sh down     stop (fast shutdown)
#   scripts/pg.sh status   exit 0 if running and accepting connections, 3 if stopped, 1 if not ready
#   scripts/pg.sh env      print the export lines the tests read
#
# Environment: TXCOORD_DATA_DIR (default <repo>/.data; this script uses its
# pg/ folder), TXCOORD_PG_PORT (default 55432), TXCOORD_PG_START_TIMEOUT /
# TXCOORD_PG_STOP_TIMEOUT (seconds, default 60 / 60).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA_DIR=${TXCOORD_DATA_DIR:-$REPO/.data}
PORT=${TXCOORD_PG_PORT:-55432}
HOST=127.0.0.1
PG_BIN=/usr/lib/postgresql/15/bin
OS_USER=txcoord
ROLE=txcoord
DATABASES=(txcoord_a txcoord_b)
START_TIMEOUT=${TXCOORD_PG_START_TIMEOUT:-60}
STOP_TIMEOUT=${TXCOORD_PG_STOP_TIMEOUT:-60}

say() { printf 'pg: %s\n' "$*" >&2; }
die() { printf 'pg: error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

as_root() {
	if is_root; then "$@"
	elif command -v sudo >/dev/null 2>&1; then sudo "$@"
	else die "need root to run: $* (install it yourself or run as root)"
	fi
}

# as_pg runs a command as the OS user that owns the cluster: txcoord when we
# are root, else ourselves.
as_pg() {
	if is_root; then runuser -u "$OS_USER" -- "$@"
	else "$@"
	fi
}

ensure_postgres() {
	if [ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/psql" ]; then return; fi
	say "installing postgresql-15 (apt-get)"
	as_root apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
	[ -x "$PG_BIN/postgres" ] || die "postgresql-15 installed but $PG_BIN/postgres is missing"
}

ensure_os_user() {
	is_root || return 0
	id -u "$OS_USER" >/dev/null 2>&1 && return 0
	say "creating OS user $OS_USER (PostgreSQL will not run as root)"
	useradd --system --user-group --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin "$OS_USER"
}

# pick_base sets BASE, the folder holding this cluster, owned by the cluster's
# OS user. <data dir>/pg when that user can reach it; otherwise (a parent
# directory it cannot search, such as /root) a folder under /var/tmp named by
# a hash of the data dir path (so of the repository path by default).
pick_base() {
	BASE=$DATA_DIR/pg
	if ! is_root || ! id -u "$OS_USER" >/dev/null 2>&1; then return; fi
	mkdir -p "$DATA_DIR" 2>/dev/null || true
	if runuser -u "$OS_USER" -- test -x "$DATA_DIR" 2>/dev/null; then return; fi
	local hash
	hash=$(printf '%s' "$DATA_DIR" | sha256sum | cut -c1-12)
	BASE=/var/tmp/txcoord-$hash/pg
	if [ "${1:-}" != quiet ]; then
		say "note: OS user $OS_USER cannot reach $DATA_DIR; using $BASE instead"
	fi
}

set_paths() {
	PGDATA=$BASE/data
	LOG=$BASE/postgres.log
}

running() { [ -f "$PGDATA/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }
ready() { "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PORT" -U "$ROLE" -d postgres -t 2 >/dev/null 2>&1; }
port_open() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }
psql_q() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PORT" -U "$ROLE" -d postgres -tA "$@"; }

port_owner() {
	if command -v ss >/dev/null 2>&1; then
		ss -Hltnp "sport = :$PORT" 2>/dev/null | grep -o 'users:(([^)]*))' | head -n 1 || true
	else
		echo "unknown process"
	fi
}

init_cluster() {
	mkdir -p "$BASE"
	if is_root; then chown "$OS_USER:" "$BASE"; fi
	chmod 700 "$BASE"
	if [ -f "$PGDATA/PG_VERSION" ]; then return; fi
	say "initdb $PGDATA"
	as_pg "$PG_BIN/initdb" -D "$PGDATA" -U "$ROLE" --auth=trust --encoding=UTF8 --locale=C \
		--no-instructions >"$BASE/initdb.log" 2>&1 || {
		tail -n 20 "$BASE/initdb.log" >&2
		die "initdb failed (full log: $BASE/initdb.log)"
	}
}

# write_config rewrites our settings at every start, so a changed
# TXCOORD_PG_PORT takes effect.
write_config() {
	as_pg tee "$PGDATA/txcoord.conf" >/dev/null <<EOF
# Written by scripts/pg.sh at every start; edits here are overwritten.
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = ''
max_connections = 200
max_prepared_transactions = 128
fsync = on
synchronous_commit = on
full_page_writes = on
log_min_messages = warning
log_line_prefix = '%m [%p] '
EOF
	as_pg tee "$PGDATA/pg_hba.conf" >/dev/null <<EOF
# Written by scripts/pg.sh: trust over TCP from 127.0.0.1 only; no other access.
# TYPE  DATABASE  USER  ADDRESS       METHOD
host    all       all   127.0.0.1/32  trust
EOF
	if ! grep -q "^include_if_exists 'txcoord.conf'" "$PGDATA/postgresql.conf"; then
		echo "include_if_exists 'txcoord.conf'" | as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
	fi
}

create_databases() {
	local db
	for db in "${DATABASES[@]}"; do
		if [ "$(psql_q -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
			say "creating database $db"
			psql_q -c "CREATE DATABASE $db OWNER $ROLE"
		fi
	done
}

lock() {
	mkdir -p "$DATA_DIR"
	exec 9>"$DATA_DIR/.pg.lock"
	flock -w 180 9 || die "another pg.sh holds $DATA_DIR/.pg.lock"
}

cmd_up() {
	lock
	ensure_postgres
	ensure_os_user
	pick_base
	set_paths
	if running; then
		local deadline=$((SECONDS + START_TIMEOUT))
		until ready; do
			[ "$SECONDS" -lt "$deadline" ] || die "cluster in $PGDATA runs but does not accept connections on $HOST:$PORT; see $LOG"
			sleep 0.2
		done
		create_databases
		say "already running on $HOST:$PORT (data $PGDATA)"
		return
	fi
	if port_open; then
		die "port $PORT on $HOST is taken by another process ($(port_owner)); stop it or set TXCOORD_PG_PORT"
	fi
	init_cluster
	write_config
	say "starting on $HOST:$PORT (data $PGDATA, log $LOG)"
	local t0=$SECONDS
	# setsid: a Ctrl-C in the terminal that ran `make` must not reach postgres.
	if ! as_pg setsid "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOG" -w -t "$START_TIMEOUT" start >/dev/null 9>&-; then
		tail -n 20 "$LOG" >&2 || true
		die "postgres did not start within ${START_TIMEOUT}s (log: $LOG)"
	fi
	local deadline=$((SECONDS + START_TIMEOUT))
	until ready; do
		[ "$SECONDS" -lt "$deadline" ] || die "postgres started but does not accept connections on $HOST:$PORT; see $LOG"
		sleep 0.2
	done
	create_databases
	say "up in $((SECONDS - t0))s: max_prepared_transactions=$(psql_q -c 'SHOW max_prepared_transactions')"
}

cmd_down() {
	lock
	pick_base quiet
	set_paths
	if [ ! -x "$PG_BIN/pg_ctl" ] || [ ! -f "$PGDATA/PG_VERSION" ]; then
		say "not initialized ($PGDATA)"
		return
	fi
	if ! running; then
		say "not running"
		return
	fi
	say "stopping (fast)"
	as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t "$STOP_TIMEOUT" stop >/dev/null ||
		die "postgres did not stop within ${STOP_TIMEOUT}s (log: $LOG)"
	say "stopped"
}

cmd_status() {
	pick_base quiet
	set_paths
	if [ ! -x "$PG_BIN/pg_ctl" ] || ! running; then
		echo "pg: stopped"
		return 3
	fi
	if ready; then
		echo "pg: running on $HOST:$PORT, data $PGDATA"
		return 0
	fi
	echo "pg: running but not accepting connections on $HOST:$PORT, data $PGDATA"
	return 1
}

cmd_env() {
	local db suffix
	for db in "${DATABASES[@]}"; do
		suffix=${db#txcoord_}
		echo "export TXCOORD_PG_DSN_${suffix^^}='postgres://$ROLE@$HOST:$PORT/$db?sslmode=disable'"
	done
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
