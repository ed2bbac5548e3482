# lib.sh — what the benchmark scripts share (sourced, not run): a temporary
# dir cleaned on exit with every process started, free ports, nginx as the
# reference (`return 200`, one worker), the whole stack under `magnetar up`,
# and a bench user's access token. Expects REPO, BUILD and TMP set; the
# caller sets `trap bench_cleanup EXIT`.
PY=/usr/bin/python3
PIDS=()
# As root each service runs as its own user and must be able to enter the
# dir mktemp made 0700 to reach its own data dir below it.
chmod 0711 "$TMP"

bench_cleanup() {
	local p rc=$?
	# A failed run keeps the stack's log for a look afterwards.
	if [ "$rc" != 0 ] && [ -f "$TMP/stack.log" ]; then
		cp "$TMP/stack.log" /tmp/magnetar-bench-stack.log
		echo "bench: the stack's log is in /tmp/magnetar-bench-stack.log" >&2
	fi
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$TMP"
}

free_port() {
	$PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until `url` answers `code` (gives up after ~30 s).
wait_for() {
	local url=$1 code=$2 i
	for i in $(seq 1 600); do
		[ "$(curl -s -o /dev/null -w '%{http_code}' "$url" 2>/dev/null)" = "$code" ] && return 0
		sleep 0.05
	done
	return 1
}

# nginx on NGINX_PORT: the reference every ratio is taken against. One
# worker, `return 200`, access log off, everything in $TMP/nginx.
start_nginx() {
	NGINX_PORT=$(free_port)
	mkdir -p "$TMP/nginx"
	cat >"$TMP/nginx/nginx.conf" <<NG
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 4096; }
http {
	access_log ${NGINX_ACCESS_LOG:-off};
	client_body_temp_path $TMP/nginx/body;
	proxy_temp_path $TMP/nginx/proxy;
	fastcgi_temp_path $TMP/nginx/fastcgi;
	uwsgi_temp_path $TMP/nginx/uwsgi;
	scgi_temp_path $TMP/nginx/scgi;
	server {
		listen 127.0.0.1:$NGINX_PORT;
		location / {
			default_type application/json;
			return 200 '{"status":"ok"}';
		}
	}
}
NG
	nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" &
	PIDS+=($!)
	wait_for "http://127.0.0.1:$NGINX_PORT/" 200 || {
		echo "bench: nginx did not start" >&2
		cat "$TMP/nginx/error.log" >&2
		exit 1
	}
}

# nginx logs nothing per request; the gateway is measured alike unless
# ACCESS_LOG=all asks for its default line per request.
export MAGNETAR_ACCESS_LOG=${ACCESS_LOG:-errors}

# The stack on GW_PORT (URL), in $TMP/var, `$1` as MAGNETAR_ENV.
start_stack() {
	GW_PORT=$(free_port)
	URL=http://127.0.0.1:$GW_PORT
	(cd "$TMP" && MAGNETAR_ENV=${1:-development} MAGNETAR_HIBP_MODE=off \
		MAGNETAR_RATE_GLOBAL=off MAGNETAR_RATE_LOGIN=off \
		MAGNETAR_HTTP_ADDR=127.0.0.1:$GW_PORT MAGNETAR_DATA_DIR=$TMP/var \
		MAGNETAR_RUN_DIR=$TMP/run exec "$BUILD/bin/magnetar" up >"$TMP/stack.log" 2>&1) &
	STACK_PID=$!
	PIDS+=($STACK_PID)
	wait_for "$URL/readyz" 200 || { echo "bench: the stack did not start" >&2; tail -20 "$TMP/stack.log" >&2; exit 1; }
}

# Registers `bench` and sets TOKEN (User-Agent wrk: what wrk sends, so the
# session's risk score stays 0).
bench_token() {
	curl -s -o /dev/null "$URL/api/v1/auth/register" -H 'Content-Type: application/json' \
		-d '{"username":"bench","password":"bench-password-123"}'
	TOKEN=$(curl -s "$URL/api/v1/auth/login" -H 'Content-Type: application/json' -H 'User-Agent: wrk' \
		-d '{"username":"bench","password":"bench-password-123"}' |
		sed 's/.*"access_token":"\([^"]*\)".*/\1/')
	[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
		-H 'User-Agent: wrk' "$URL/api/v1/auth/me")" = 200 ] || {
		echo "bench: /me does not answer 200" >&2
		exit 1
	}
}

# The pid of service `$1` (magctl ping), and its resident set in KiB.
service_pid() {
	MAGNETAR_RUN_DIR=$TMP/run MAGNETAR_DATA_DIR=$TMP/var "$BUILD/bin/magctl" ping "$1" |
		sed -n 's/.*pid=\([0-9]*\).*/\1/p'
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
