#!/usr/bin/env bash
# load.sh — throughput and latency per route under wrk, and a soak whose
# RSS per service must stay flat (issue 10). Ratios against nginx `return
# 200` in the same run, at the same connection counts.
#
#   tests/bench/load.sh                       # 16/64/256 connections, 5 s each, 600 s soak
#   DURATION=10s SOAK_S=60 tests/bench/load.sh
#
# Routes: GET /healthz (no RPC), GET /readyz (4 RPCs), GET /api/v1/auth/me
# (a verified token, the gateway's cache), and a mixed Lua script (70 % /me,
# 20 % /healthz, 10 % /api/v1/auth/sessions: an RPC to auth). The stack
# runs in development mode (production argon2 costs; rate limits off so the
# bench measures the path, not the limiter). Prints req/s, p50 and p99.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-${MAGNETAR_BUILD:-$REPO/build}}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
DURATION=${DURATION:-5s}
SOAK_S=${SOAK_S:-600}
CONNS=${CONNS:-16 64 256}
for tool in wrk nginx curl; do
	command -v "$tool" >/dev/null || { echo "load: $tool is required" >&2; exit 2; }
done
TMP=$(mktemp -d /tmp/magnetar-load.XXXXXX)
# shellcheck source=tests/bench/lib.sh
. "$REPO/tests/bench/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

start_nginx
start_stack development
bench_token
cat >"$TMP/me.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.headers["User-Agent"] = "wrk"
LUA
cat >"$TMP/mixed.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.headers["User-Agent"] = "wrk"
local n = 0
request = function()
  n = n + 1
  local k = n % 10
  if k < 7 then return wrk.format("GET", "/api/v1/auth/me")
  elseif k < 9 then return wrk.format("GET", "/healthz")
  else return wrk.format("GET", "/api/v1/auth/sessions") end
end
LUA

# "req/s p50 p99 non2xx" of one wrk run.
run() {
	local c=$1
	shift
	wrk -t2 -c"$c" -d"$DURATION" --latency "$@" | awk '
		/Requests\/sec/ {rps=$2}
		/^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
		/Non-2xx/ {bad=$NF}
		END {printf "%s %s %s %s\n", rps, p50, p99, bad ? bad : 0}'
}

printf '%-22s %5s %10s %9s %9s %7s %8s\n' route conns req/s p50 p99 non2xx "x nginx"
for c in $CONNS; do
	read -r nr n50 n99 nbad < <(run "$c" "http://127.0.0.1:$NGINX_PORT/")
	printf '%-22s %5s %10s %9s %9s %7s %8s\n' nginx "$c" "$nr" "$n50" "$n99" "$nbad" 1.00
	for route in healthz readyz me mixed; do
		case $route in
		healthz) args=("$URL/healthz") ;;
		readyz) args=("$URL/readyz") ;;
		me) args=(-s "$TMP/me.lua" "$URL/api/v1/auth/me") ;;
		mixed) args=(-s "$TMP/mixed.lua" "$URL/") ;;
		esac
		read -r r p50 p99 bad < <(run "$c" "${args[@]}")
		printf '%-22s %5s %10s %9s %9s %7s %8s\n' "/$route" "$c" "$r" "$p50" "$p99" "$bad" \
			"$($PY -c "print(f'{$r/$nr:.2f}')")"
	done
done

# Soak: the mixed load for SOAK_S seconds; RSS per service at start and end.
[ "$SOAK_S" -gt 0 ] || exit 0
declare -A START_RSS PID_OF
for s in gateway auth audit breach terminal; do
	PID_OF[$s]=$(service_pid "$s")
done
wrk -t2 -c64 -d5s -s "$TMP/mixed.lua" "$URL/" >/dev/null # warm-up: caches, pools
for s in "${!PID_OF[@]}"; do START_RSS[$s]=$(rss_kib "${PID_OF[$s]}"); done
echo "soak: mixed load, 64 connections, ${SOAK_S} s"
wrk -t2 -c64 -d"${SOAK_S}s" --latency -s "$TMP/mixed.lua" "$URL/" | grep -E "Requests/sec|^ +(50|99)%|Non-2xx" || true
printf '%-10s %8s %12s %12s %8s\n' service pid "start KiB" "end KiB" growth
for s in gateway auth audit breach terminal; do
	p=${PID_OF[$s]}
	now=$(service_pid "$s")
	if [ "$now" != "$p" ]; then
		echo "soak: $s ${now:+restarted during the soak (pid $p, now $now)}${now:-did not answer magctl ping}" >&2
		grep -E "\[$s\].*(fatal|error)|$s exited" "$TMP/stack.log" | tail -5 >&2 || true
		exit 1
	fi
	e=$(rss_kib "$p")
	printf '%-10s %8s %12s %12s %7s%%\n' "$s" "$p" "${START_RSS[$s]}" "$e" \
		"$($PY -c "print(f'{100*($e-${START_RSS[$s]})/${START_RSS[$s]}:.1f}')")"
done
