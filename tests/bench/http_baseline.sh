#!/usr/bin/env bash
# http_baseline.sh — requests/s of the gateway's GET /healthz and GET /readyz
# against nginx `return 200` on the same machine in the same run
# (docs/architecture.md, "Performance budget": /healthz ≥ 0.9× nginx, a route with RPCs ≥ 0.3×).
#
#   tests/bench/http_baseline.sh            # BUILD=<repo>/build, 3 rounds of 5 s
#   BUILD=build-gw ROUNDS=5 DURATION=10s tests/bench/http_baseline.sh
#
# nginx (1 worker) and the gateway alone serve the first two targets; for
# /readyz the whole stack runs under `$BUILD/bin/magnetar up` when it is built
# (otherwise /readyz is reported as skipped). Rounds alternate between the
# targets so drifting machine load hits all of them alike; medians and ratios
# are printed at the end. Every process started here is stopped on exit.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-${MAGNETAR_BUILD:-$REPO/build}}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
# LOGS=each: both servers write a line per request (their defaults: nginx's
# access_log to a file, the gateway's access log to its stderr file);
# LOGS=off: nginx `access_log off`, the gateway MAGNETAR_ACCESS_LOG=errors.
LOGS=${LOGS:-each}
case $LOGS in each | off) ;; *) echo "http_baseline: LOGS is each or off" >&2; exit 2 ;; esac

for tool in wrk nginx curl; do
	command -v "$tool" >/dev/null || { echo "http_baseline: $tool is required" >&2; exit 2; }
done
[ -x "$BUILD/bin/magnetar-gateway" ] || {
	echo "http_baseline: $BUILD/bin/magnetar-gateway is not built" >&2
	exit 2
}

TMP=$(mktemp -d /tmp/magnetar-bench.XXXXXX)
# shellcheck source=tests/bench/lib.sh
. "$REPO/tests/bench/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

if [ "$LOGS" = each ]; then
	NGINX_ACCESS_LOG="$TMP/nginx-access.log"
	GW_ACCESS_LOG=all
else
	NGINX_ACCESS_LOG=off
	GW_ACCESS_LOG=errors
fi
start_nginx

# ---- the gateway alone -------------------------------------------------------
GW_PORT=$(free_port)
mkdir -p "$TMP/gw"
MAGNETAR_ENV=test MAGNETAR_DATA_DIR="$TMP/gw/var" MAGNETAR_RUN_DIR="$TMP/gw/run" \
	MAGNETAR_HTTP_ADDR="127.0.0.1:$GW_PORT" MAGNETAR_ACCESS_LOG="$GW_ACCESS_LOG" \
	"$BUILD/bin/magnetar-gateway" 2>"$TMP/gw/gateway.log" &
PIDS+=($!)
wait_for "http://127.0.0.1:$GW_PORT/healthz" 200 || { echo "gateway did not start" >&2; cat "$TMP/gw/gateway.log" >&2; exit 1; }

# ---- the whole stack for /readyz, when it is built --------------------------
READY_URL=
if [ -x "$BUILD/bin/magnetar" ] && [ -x "$BUILD/bin/magnetar-auth" ] &&
	[ -x "$BUILD/bin/magnetar-audit" ] && [ -x "$BUILD/bin/magnetar-breach" ] &&
	[ -x "$BUILD/bin/magnetar-terminal" ]; then
	STACK_PORT=$(free_port)
	mkdir -p "$TMP/stack"
	MAGNETAR_ENV=test MAGNETAR_DATA_DIR="$TMP/stack/var" MAGNETAR_RUN_DIR="$TMP/stack/run" \
		MAGNETAR_HTTP_ADDR="127.0.0.1:$STACK_PORT" MAGNETAR_HIBP_MODE=off \
		"$BUILD/bin/magnetar" up >"$TMP/stack/stack.log" 2>&1 &
	PIDS+=($!)
	if wait_for "http://127.0.0.1:$STACK_PORT/readyz" 200; then
		READY_URL="http://127.0.0.1:$STACK_PORT/readyz"
	else
		echo "stack did not become ready: /readyz skipped (log: last lines below)" >&2
		tail -5 "$TMP/stack/stack.log" >&2 || true
	fi
else
	echo "magnetar and the services are not built in $BUILD: /readyz skipped" >&2
fi

# ---- rounds ------------------------------------------------------------------
# One wrk run; prints "<req/s> <p99 ms> <non-2xx>".
run_wrk() {
	local out rps p99 bad
	out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$1")
	rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
	p99=$(awk '$1 == "99%" {v = $2; if (v ~ /us$/) {sub(/us$/, "", v); v /= 1000}
		else if (v ~ /ms$/) {sub(/ms$/, "", v)} else if (v ~ /s$/) {sub(/s$/, "", v); v *= 1000}
		printf "%.2f", v}' <<<"$out")
	bad=$(awk '/Non-2xx or 3xx responses:/ {print $5}' <<<"$out")
	echo "${rps:-0} ${p99:-?} ${bad:-0}"
}

declare -A RESULTS
TARGETS=(nginx healthz)
declare -A URL=([nginx]="http://127.0.0.1:$NGINX_PORT/" [healthz]="http://127.0.0.1:$GW_PORT/healthz")
if [ -n "$READY_URL" ]; then
	TARGETS+=(readyz)
	URL[readyz]=$READY_URL
fi

echo "machine: $(nproc) cpus, $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS alternating rounds, access logs: $LOGS"
printf '%-6s %-8s %12s %10s %8s\n' round target req/s p99_ms non2xx
for r in $(seq 1 "$ROUNDS"); do
	for t in "${TARGETS[@]}"; do
		read -r rps p99 bad < <(run_wrk "${URL[$t]}")
		printf '%-6s %-8s %12s %10s %8s\n' "$r" "$t" "$rps" "$p99" "$bad"
		RESULTS[$t]+="$rps "
	done
done

$PY - "${RESULTS[nginx]}" "${RESULTS[healthz]}" "${RESULTS[readyz]:-}" <<'EOF'
import statistics, sys
names = ["nginx", "healthz", "readyz"]
med = {}
for name, vals in zip(names, sys.argv[1:]):
    v = [float(x) for x in vals.split()]
    if v:
        med[name] = statistics.median(v)
print()
print("| target | median req/s | ratio to nginx | goal |")
print("|---|---|---|---|")
goals = {"nginx": "", "healthz": ">= 0.90", "readyz": ">= 0.30"}
for name in names:
    if name not in med:
        print(f"| /{name} | skipped | | {goals[name]} |")
        continue
    ratio = med[name] / med["nginx"] if med.get("nginx") else 0
    label = "nginx `return 200`" if name == "nginx" else f"gateway /{name}"
    print(f"| {label} | {med[name]:.0f} | {ratio:.2f} | {goals[name]} |")
EOF
