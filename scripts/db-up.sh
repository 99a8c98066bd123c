#!/usr/bin/env bash
# Start the development databases (PostgreSQL and SurrealDB); idempotent.
# Afterwards: eval "$(scripts/pg.sh env)"; eval "$(scripts/surreal.sh env)"
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/pg.sh" up
"$here/surreal.sh" up
