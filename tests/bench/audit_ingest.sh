#!/bin/sh
# audit_ingest.sh — builds and runs the audit ingest benchmark 3 times and
# prints every round (ratios are what to compare; absolute rates follow the
# machine). Usage: tests/bench/audit_ingest.sh [BUILD_DIR] [EVENTS CLIENTS BATCH]
set -eu
BUILD=${1:-build}
shift || true
make -s BUILD="$BUILD" "$BUILD/tests/audit_ingest"
for round in 1 2 3; do
	echo "== round $round"
	"$BUILD/tests/audit_ingest" "$@" 2>/dev/null
done
