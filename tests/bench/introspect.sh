#!/usr/bin/env bash
# introspect.sh — POST /api/v1/auth/introspect through the gateway at 64
# connections (issue 21: goal p50 < 1 ms), one registered client, one live
# token, against nginx `return 200` in the same run for scale, and at one
# connection (the service time of a call: with 64 closed-loop connections
# the p50 is about 64 / throughput, for nginx too). Every call is one RPC to
# auth, one session read and one audit event (docs/apps.md).
#
#   tests/bench/introspect.sh            # BUILD=<repo>/build, 3 rounds of 5 s
#   BUILD=build ROUNDS=5 DURATION=10s tests/bench/introspect.sh
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-${MAGNETAR_BUILD:-$REPO/build}}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
for tool in wrk nginx curl; do
	command -v "$tool" >/dev/null || { echo "introspect bench: $tool is required" >&2; exit 2; }
done

TMP=$(mktemp -d /tmp/magnetar-introspect-bench.XXXXXX)
# shellcheck source=tests/bench/lib.sh
. "$REPO/tests/bench/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

start_nginx
start_stack development
bench_token
SECRET=$(MAGNETAR_RUN_DIR=$TMP/run MAGNETAR_DATA_DIR=$TMP/var "$BUILD/bin/magctl" client create bench |
	sed -n 's/^client_secret=//p')
BASIC=$(printf 'bench:%s' "$SECRET" | base64 -w0)
[ "$(curl -s -u "bench:$SECRET" --data-urlencode "token=$TOKEN" "$URL/api/v1/auth/introspect" |
	cut -c1-14)" = '{"active":true' ] || { echo "introspect bench: not active" >&2; exit 1; }
cat > "$TMP/introspect.lua" <<LUA
wrk.method = "POST"
wrk.body = "token=$TOKEN"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $BASIC"
LUA

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > "$TMP/nginx.txt"; : > "$TMP/rps.txt"; : > "$TMP/p50.txt"
for r in $(seq 1 "$ROUNDS"); do
	n=$(wrk -t1 -c64 -d"$DURATION" http://127.0.0.1:$NGINX_PORT/ | awk '/Requests\/sec/ {print $2}')
	wrk -t1 -c64 -d"$DURATION" --latency -s "$TMP/introspect.lua" \
		"$URL/api/v1/auth/introspect" > "$TMP/round.txt"
	i=$(awk '/Requests\/sec/ {print $2}' "$TMP/round.txt")
	p50=$(awk '$1 == "50%" {print $2}' "$TMP/round.txt")
	p99=$(awk '$1 == "99%" {print $2}' "$TMP/round.txt")
	echo "$n" >> "$TMP/nginx.txt"; echo "$i" >> "$TMP/rps.txt"; echo "$p50" >> "$TMP/p50.txt"
	echo "round $r: nginx $n req/s; introspect $i req/s, p50 $p50, p99 $p99," \
		"non-2xx $(awk '/Non-2xx/ {print $NF}' "$TMP/round.txt")"
done
wrk -t1 -c1 -d"$DURATION" --latency http://127.0.0.1:$NGINX_PORT/ > "$TMP/n1.txt"
wrk -t1 -c1 -d"$DURATION" --latency -s "$TMP/introspect.lua" "$URL/api/v1/auth/introspect" > "$TMP/i1.txt"
echo "one connection: nginx p50 $(awk '$1 == "50%" {print $2}' "$TMP/n1.txt")," \
	"introspect p50 $(awk '$1 == "50%" {print $2}' "$TMP/i1.txt")" \
	"p99 $(awk '$1 == "99%" {print $2}' "$TMP/i1.txt")"
N=$(median < "$TMP/nginx.txt"); I=$(median < "$TMP/rps.txt")
echo "median: introspect $I req/s, $($PY -c "print(f'{$I/$N:.3f}')")x nginx;" \
	"p50 per round: $(tr '\n' ' ' < "$TMP/p50.txt")(goal < 1 ms)"
