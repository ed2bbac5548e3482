#!/bin/bash
# breach.sh — measures magnetar-breach (docs/performance.md, "Breach"):
#   1. offline lookups/s in process on a generated store of N hashes
#   2. `magctl breach import` rate on NI generated SHA1:COUNT lines
#   3. Range latency through RPC on a cache hit (p50/p99), Ping for reference
# usage: BUILD=build-breach tests/bench/breach.sh [N (1e8)] [NI (1e7)]
# Needs ~2.3 GB of disk per 10^8 stored hashes plus ~0.5 GB per 10^7 lines in
# $WORK (default: a fresh dir under /tmp, removed at the end).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
N=${1:-100000000}
NI=${2:-10000000}
WORK=$(mktemp -d "${WORK:-/tmp}/breach-bench.XXXXXX")
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

make -s BUILD="$BUILD" "$BUILD/bin/magnetar-breach" "$BUILD/bin/magctl" "$BUILD/lib/libmagnetar-pwstore.a" \
	"$BUILD/lib/libmagnetar-common.a"
cc -O2 -g -std=c17 -D_GNU_SOURCE -pthread -I. -I"$BUILD/gen" -o "$WORK/breach_bench" \
	tests/bench/breach_bench.c "$BUILD/lib/libmagnetar-pwstore.a" \
	"$BUILD/lib/libmagnetar-common.a" -lnng $(pkg-config --libs libprotobuf-c openssl sqlite3) \
	-lpthread
echo "== machine: $(nproc) cores, $(uname -r)"

echo "== 1. offline store of $N hashes"
"$WORK/breach_bench" gen "$WORK/pwned.store" "$N"
echo "store size: $(stat -c %s "$WORK/pwned.store") bytes"
"$WORK/breach_bench" offline "$WORK/pwned.store" "$N" 10000000
"$WORK/breach_bench" offline "$WORK/pwned.store" "$N" 10000000
rm -f "$WORK/pwned.store"

echo "== 2. import of $NI SHA1:COUNT lines"
"$WORK/breach_bench" gentext "$WORK/pwned.txt" "$NI"
echo "input size: $(stat -c %s "$WORK/pwned.txt") bytes"
export MAGNETAR_ENV=test MAGNETAR_SANDBOX=off MAGNETAR_DATA_DIR="$WORK/var" MAGNETAR_RUN_DIR="$WORK/run"
"$BUILD/bin/magctl" breach import -o "$WORK/import.store" -R "$WORK/pwned.txt"
rm -f "$WORK/pwned.txt" "$WORK/import.store"

echo "== 3. Range through RPC, cache hit"
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
/usr/bin/python3 tests/fixtures/hibp_server.py --port "$PORT" --data tests/fixtures/pwned_sample.txt \
	--log "$WORK/requests.log" >/dev/null 2>&1 &
PIDS+=($!)
MAGNETAR_HIBP_URL="http://127.0.0.1:$PORT" "$BUILD/bin/magnetar-breach" >"$WORK/breach.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do "$BUILD/bin/magctl" ping breach >/dev/null 2>&1 && break; sleep 0.05; done
"$WORK/breach_bench" rpc "ipc://$WORK/run/breach.sock" 20000
echo "API requests made: $(wc -l <"$WORK/requests.log") (the first Range only)"
