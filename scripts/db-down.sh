#!/usr/bin/env bash
# Stop the development databases. Both are attempted even if one fails.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rc=0
"$here/surreal.sh" down || rc=$?
"$here/pg.sh" down || rc=$?
exit "$rc"
