#!/usr/bin/env bash
# auth.sh — the authenticated hot path (issue 5, docs/architecture.md, "Performance budget"):
#   1. GET /api/v1/auth/me requests/s against nginx `return 200`, same run
#      (goal ≥ 0.8×, issue 20: the token is verified locally and /me comes from the
#      gateway's cache, no RPC);
#   2. GET /api/v1/auth/sessions, one RPC to auth per request, against the
#      same nginx (issue 20: goal >= 0.3x);
#   3. p50/p99 of GET /api/v1/auth/me while 32 clients hammer POST
#      /api/v1/auth/login with real argon2id (goal p99 < 10 ms; issue 20: < 5 ms);
#   4. the gateway's resident set once started, before the load (issue 20:
#      idle RSS < 16 MiB).
#
#   tests/bench/auth.sh            # BUILD=<repo>/build, 3 rounds of 5 s
#   BUILD=build ROUNDS=5 DURATION=10s tests/bench/auth.sh
#
# Runs the whole stack in development mode (production argon2 costs) in a
# temporary directory; every process started here is stopped on exit.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-${MAGNETAR_BUILD:-$REPO/build}}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
for tool in wrk nginx curl; do
	command -v "$tool" >/dev/null || { echo "auth bench: $tool is required" >&2; exit 2; }
done

TMP=$(mktemp -d /tmp/magnetar-auth-bench.XXXXXX)
# shellcheck source=tests/bench/lib.sh
. "$REPO/tests/bench/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

start_nginx
export MAGNETAR_TRUSTED_PROXIES=127.0.0.1/32 # wrk is the "proxy" of the flood's networks
start_stack development
bench_token # wrk sends this exact User-Agent, and no fingerprint headers: score 0.
GW=$(service_pid gateway)
echo "gateway idle RSS: $(rss_kib "$GW") KiB (goal < 16384 KiB)"
cat > "$TMP/me.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.headers["User-Agent"] = "wrk"
LUA
# Every flood request is a wrong password for another (unknown) user from
# another network, so auth's brute-force throttle (per account and per
# client network) never answers in argon2id's place: each one is hashed
# (an unknown user costs a full hash too), or refused by the hashing pool's
# full queue (429), which is the defence being measured.
cat > "$TMP/login.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"username":"flood%d","password":"wrong-password-x"}', n)
  local ip = string.format("10.%d.%d.1", math.random(0, 255), math.random(0, 255))
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
                                  ["X-Forwarded-For"] = ip}, body)
end
LUA

rps() { wrk -t1 -c64 -d"$DURATION" "$@" | awk '/Requests\/sec/ {print $2}'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > "$TMP/nginx.txt"; : > "$TMP/me.txt"; : > "$TMP/sessions.txt"
for r in $(seq 1 "$ROUNDS"); do
	n=$(rps http://127.0.0.1:$NGINX_PORT/); echo "$n" >> "$TMP/nginx.txt"
	m=$(rps -s "$TMP/me.lua" $URL/api/v1/auth/me); echo "$m" >> "$TMP/me.txt"
	s=$(rps -s "$TMP/me.lua" $URL/api/v1/auth/sessions); echo "$s" >> "$TMP/sessions.txt"
	echo "round $r: nginx $n req/s, /api/v1/auth/me $m req/s, /api/v1/auth/sessions $s req/s"
done
N=$(median < "$TMP/nginx.txt"); M=$(median < "$TMP/me.txt"); S=$(median < "$TMP/sessions.txt")
echo "median: nginx $N req/s, /me $M req/s, ratio $($PY -c "print(f'{$M/$N:.2f}')")x (goal >= 0.8x)"
echo "median: /sessions $S req/s, ratio $($PY -c "print(f'{$S/$N:.2f}')")x (goal >= 0.3x)"

# /me latency while 32 clients try passwords (real argon2id, m=19 MiB t=2).
wrk -t1 -c32 -d"$DURATION" -s "$TMP/login.lua" $URL/api/v1/auth/login > "$TMP/flood.txt" &
FLOOD=$!
sleep 1
wrk -t1 -c8 -d"$DURATION" --latency -s "$TMP/me.lua" $URL/api/v1/auth/me > "$TMP/me_lat.txt"
wait $FLOOD || true
echo "/me under a login flood:"; grep -E "^ +(50|99)%" "$TMP/me_lat.txt"
echo "login flood: $(awk '/Requests\/sec/ {print $2}' "$TMP/flood.txt") req/s," \
	"$(awk '/Non-2xx/ {print $NF}' "$TMP/flood.txt") non-2xx (401 wrong password, 429 pool full)"
