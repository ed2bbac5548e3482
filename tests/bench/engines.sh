#!/usr/bin/env bash
# engines.sh — the HTTP engine decision (issue 20 item 2): the gateway's
# /healthz and a cached-token /me prototyped on libmicrohttpd at its best
# (tests/bench/engines/mhd_proto.c) and on h2o's event loop
# (engines/h2o_proto.c), against nginx `return 200` and the real gateway's
# /healthz, in one run, rounds alternating. Access logs off everywhere: the
# engines are compared, not the logging (http_baseline.sh LOGS=each does).
#
#   tests/bench/engines.sh                      # wrk -t1 -c64, 3 rounds of 5 s
#   THREADS=2 CONNS=256 tests/bench/engines.sh
#
# Needs Debian's libh2o-evloop-dev (bench only: apt-get install
# libh2o-evloop-dev), wrk, nginx, gcc; the gateway built in $BUILD.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-${MAGNETAR_BUILD:-$REPO/build}}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
WORKERS=${WORKERS:-$(nproc)} # server threads of both prototypes

for tool in wrk nginx curl gcc; do
	command -v "$tool" >/dev/null || { echo "engines: $tool is required" >&2; exit 2; }
done
pkg-config --exists libh2o-evloop || {
	echo "engines: libh2o-evloop-dev is missing: apt-get install libh2o-evloop-dev" >&2
	exit 2
}
[ -x "$BUILD/bin/magnetar-gateway" ] || { echo "engines: $BUILD/bin/magnetar-gateway is not built" >&2; exit 2; }

TMP=$(mktemp -d /tmp/magnetar-engines.XXXXXX)
# shellcheck source=tests/bench/lib.sh
. "$REPO/tests/bench/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

CFLAGS="-O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -I$REPO"
SRC="$REPO/tests/bench/engines"
gcc $CFLAGS -o "$TMP/mhd_proto" "$SRC/mhd_proto.c" "$SRC/proto.c" "$REPO/common/siphash.c" \
	-lmicrohttpd -lcrypto -lpthread
gcc $CFLAGS -DH2O_USE_LIBUV=0 -o "$TMP/h2o_proto" "$SRC/h2o_proto.c" "$SRC/proto.c" \
	"$REPO/common/siphash.c" $(pkg-config --libs libh2o-evloop) -lssl -lcrypto -lpthread

NGINX_ACCESS_LOG=off
start_nginx
MHD_PORT=$(free_port)
"$TMP/mhd_proto" "$MHD_PORT" "$WORKERS" &
PIDS+=($!)
H2O_PORT=$(free_port)
"$TMP/h2o_proto" "$H2O_PORT" "$WORKERS" &
PIDS+=($!)
GW_PORT=$(free_port)
mkdir -p "$TMP/gw"
MAGNETAR_ENV=test MAGNETAR_DATA_DIR="$TMP/gw/var" MAGNETAR_RUN_DIR="$TMP/gw/run" \
	MAGNETAR_HTTP_ADDR="127.0.0.1:$GW_PORT" MAGNETAR_ACCESS_LOG=errors \
	MAGNETAR_RATE_GLOBAL=off "$BUILD/bin/magnetar-gateway" 2>"$TMP/gw/gateway.log" &
PIDS+=($!)
for u in "http://127.0.0.1:$MHD_PORT/healthz" "http://127.0.0.1:$H2O_PORT/healthz" \
	"http://127.0.0.1:$GW_PORT/healthz"; do
	wait_for "$u" 200 || { echo "engines: $u did not answer" >&2; exit 1; }
done
TOKEN=$(sed -n 's/^#define PROTO_TOKEN "\(.*\)"$/\1/p' "$SRC/proto.h")
AUTH="Authorization: Bearer $TOKEN"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" "http://127.0.0.1:$H2O_PORT/me")" = 200 ] &&
	[ "$(curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" "http://127.0.0.1:$MHD_PORT/me")" = 200 ] ||
	{ echo "engines: a prototype's /me does not answer 200" >&2; exit 1; }

# One wrk run; prints "<req/s> <p99 ms> <non-2xx>".
run_wrk() {
	local out rps p99 bad
	out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@")
	rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
	p99=$(awk '$1 == "99%" {v = $2; if (v ~ /us$/) {sub(/us$/, "", v); v /= 1000}
		else if (v ~ /ms$/) {sub(/ms$/, "", v)} else if (v ~ /s$/) {sub(/s$/, "", v); v *= 1000}
		printf "%.2f", v}' <<<"$out")
	bad=$(awk '/Non-2xx or 3xx responses:/ {print $5}' <<<"$out")
	echo "${rps:-0} ${p99:-?} ${bad:-0}"
}

TARGETS=(nginx gateway-healthz mhd-healthz h2o-healthz mhd-me h2o-me)
declare -A URL=([nginx]="http://127.0.0.1:$NGINX_PORT/"
	[gateway-healthz]="http://127.0.0.1:$GW_PORT/healthz"
	[mhd-healthz]="http://127.0.0.1:$MHD_PORT/healthz" [h2o-healthz]="http://127.0.0.1:$H2O_PORT/healthz"
	[mhd-me]="http://127.0.0.1:$MHD_PORT/me" [h2o-me]="http://127.0.0.1:$H2O_PORT/me")
declare -A RESULTS
echo "machine: $(nproc) cpus, $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS alternating rounds, prototypes with $WORKERS threads, logs off"
printf '%-6s %-16s %12s %10s %8s\n' round target req/s p99_ms non2xx
for r in $(seq 1 "$ROUNDS"); do
	for t in "${TARGETS[@]}"; do
		read -r rps p99 bad < <(run_wrk -H "$AUTH" "${URL[$t]}")
		printf '%-6s %-16s %12s %10s %8s\n' "$r" "$t" "$rps" "$p99" "$bad"
		RESULTS[$t]+="$rps "
	done
done
echo
echo "| target | median req/s | ratio to nginx |"
echo "|---|---|---|"
for t in "${TARGETS[@]}"; do
	$PY -c 'import statistics, sys
v = [float(x) for x in sys.argv[2].split()]; n = [float(x) for x in sys.argv[3].split()]
print("| %s | %.0f | %.2f |" % (sys.argv[1], statistics.median(v), statistics.median(v) / statistics.median(n)))' \
		"$t" "${RESULTS[$t]}" "${RESULTS[nginx]}"
done
