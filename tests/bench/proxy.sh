#!/usr/bin/env bash
# proxy.sh — a proxied GET through the gateway (MAGNETAR_UPSTREAMS, policy
# `authenticated`: the token verified, identity headers added) against
# nginx `proxy_pass` to the same upstream, both logging a line per request
# (issue 21: goal ≥ 0.6× nginx). The upstream is a second nginx answering
# `return 200`; both proxies open one upstream connection per request
# (nginx's default HTTP/1.0 to upstreams, the gateway's Connection: close).
#
#   tests/bench/proxy.sh            # BUILD=<repo>/build, 3 rounds of 5 s, 32 connections (half the per-client cap of 64 exchanges)
#   BUILD=build ROUNDS=5 DURATION=10s CONNS=16 tests/bench/proxy.sh
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-${MAGNETAR_BUILD:-$REPO/build}}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-32}
for tool in wrk nginx curl; do
	command -v "$tool" >/dev/null || { echo "proxy bench: $tool is required" >&2; exit 2; }
done

TMP=$(mktemp -d /tmp/magnetar-proxy-bench.XXXXXX)
# shellcheck source=tests/bench/lib.sh
. "$REPO/tests/bench/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

start_nginx # the upstream, on NGINX_PORT
# The reference: nginx proxy_pass, one worker, a line per request.
PROXY_PORT=$(free_port)
mkdir -p "$TMP/nproxy"
cat >"$TMP/nproxy/nginx.conf" <<NG
worker_processes 1;
daemon off;
pid $TMP/nproxy/nginx.pid;
error_log $TMP/nproxy/error.log;
events { worker_connections 4096; }
http {
	access_log $TMP/nproxy/access.log;
	client_body_temp_path $TMP/nproxy/body;
	proxy_temp_path $TMP/nproxy/proxy;
	fastcgi_temp_path $TMP/nproxy/fastcgi;
	uwsgi_temp_path $TMP/nproxy/uwsgi;
	scgi_temp_path $TMP/nproxy/scgi;
	server {
		listen 127.0.0.1:$PROXY_PORT;
		location /app/ { proxy_pass http://127.0.0.1:$NGINX_PORT; }
	}
}
NG
nginx -p "$TMP/nproxy" -e "$TMP/nproxy/error.log" -c "$TMP/nproxy/nginx.conf" &
PIDS+=($!)
wait_for "http://127.0.0.1:$PROXY_PORT/app/x" 200 || { echo "proxy bench: nginx proxy did not start" >&2; exit 1; }

export ACCESS_LOG=all MAGNETAR_ACCESS_LOG=all
export MAGNETAR_UPSTREAMS="/app http://127.0.0.1:$NGINX_PORT authenticated"
start_stack development
bench_token
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -H 'User-Agent: wrk' \
	"$URL/app/x")" = 200 ] || { echo "proxy bench: the proxied GET is not 200" >&2; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/app/x")" = 401 ] || {
	echo "proxy bench: the proxied GET without a token is not 401" >&2; exit 1; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > "$TMP/nginx.txt"; : > "$TMP/gw.txt"
for r in $(seq 1 "$ROUNDS"); do
	wrk -t1 -c"$CONNS" -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" \
		"http://127.0.0.1:$PROXY_PORT/app/x" > "$TMP/n.txt"
	wrk -t1 -c"$CONNS" -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" \
		"$URL/app/x" > "$TMP/g.txt"
	n=$(awk '/Requests\/sec/ {print $2}' "$TMP/n.txt")
	g=$(awk '/Requests\/sec/ {print $2}' "$TMP/g.txt")
	echo "$n" >> "$TMP/nginx.txt"; echo "$g" >> "$TMP/gw.txt"
	echo "round $r: nginx proxy_pass $n req/s (p50 $(awk '$1 == "50%" {print $2}' "$TMP/n.txt"));" \
		"gateway $g req/s (p50 $(awk '$1 == "50%" {print $2}' "$TMP/g.txt"))," \
		"non-2xx $(awk '/Non-2xx/ {print $NF}' "$TMP/g.txt")"
done
N=$(median < "$TMP/nginx.txt"); G=$(median < "$TMP/gw.txt")
echo "median: nginx proxy_pass $N req/s, gateway $G req/s, ratio $(awk -v g="$G" -v n="$N" 'BEGIN {printf "%.2f", g / n}')"
