#!/usr/bin/env bash
# The txcoord demo behind `make demo`: transfers between PostgreSQL and
# SurrealDB accounts through a 3-node txcoord cluster whose leader is
# SIGKILLed mid-run (a new leader is elected and finishes what was in doubt;
# the killed node restarts and rejoins); ends with one line
#   demo: transfers=N committed=A aborted=B unknown_resolved=C total_before=X total_after=Y pg_prepared_left=P surreal_intents_left=S nodes=3 elections=E failover_ms=F in_doubt_clear_ms=G
# and exits non-zero if any transfer was not all-or-nothing, anything is
# left in doubt, or the nodes' decision stores differ. --nodes 1 runs the
# single-node variant (the only node is killed and restarted).
#
# Assumes `make build` and `make db-up` ran (`make demo` does both). Extra
# arguments go to bin/txdemo (see bin/txdemo --help), e.g.
#   scripts/demo.sh --transfers 1000 --workers 16
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

[ -x bin/txcoord ] || die "bin/txcoord is missing: run \`make build\` first (or \`make demo\`, which builds and starts the databases)"

# `make build` builds txdemo too; build it here as well so that running this
# script directly never uses a stale binary (the Go build cache makes this
# instant when nothing changed).
go build -o bin/txdemo ./cmd/txdemo || die "building cmd/txdemo failed"

scripts/pg.sh status >/dev/null 2>&1 ||
	die "PostgreSQL is not running: run \`make db-up\` (or scripts/db-up.sh) first"
scripts/surreal.sh status >/dev/null 2>&1 ||
	die "SurrealDB is not running: run \`make db-up\` (or scripts/db-up.sh) first"

eval "$(scripts/pg.sh env)"
eval "$(scripts/surreal.sh env)"

exec bin/txdemo --txcoord bin/txcoord --work-dir "$REPO/.data/demo" "$@"
