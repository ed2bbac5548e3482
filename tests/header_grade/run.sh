#!/usr/bin/env bash
# Issue 6, item 9: with TLS on, the MDN HTTP Observatory scanner
# (@mdn/mdn-http-observatory, pinned in package.json / package-lock.json
# here) must grade magnetar-gateway A+.
#
# Builds nothing: expects `make all`, binaries in ${MAGNETAR_BUILD:-build}/bin.
# 1. Installs the scanner into <repo>/build/observatory/ (never into the
#    source tree) with `npm ci --ignore-scripts`: its postinstall would fetch
#    the HSTS preload list and the TLD list from the internet. The scanner
#    reads conf/hsts-preload.json of its package (src/analyzer/hsts.js) on
#    every scan, so an empty list `{}` is written there: nothing is preloaded,
#    the grade is earned by headers alone. Skipped while the installed lock
#    matches (stamp file).
# 2. scan() takes a host name only and fetches http://HOST/ and https://HOST/
#    on ports 80 and 443 (its `options` are not passed on to the retriever in
#    1.4.8), so the gateway listens on 127.0.0.1:443 and the host is
#    `localhost`. As root the scan runs in a network namespace of its own
#    (unshare --net): ports 443 and 80 are surely free there, and the
#    gateway's plain-HTTP redirect listener (MAGNETAR_HTTP_REDIRECT_ADDR)
#    takes port 80, so the redirection to https is graded too. Without a
#    namespace it needs 127.0.0.1:443 free and leaves port 80 alone.
# 3. A throwaway CA and a certificate for localhost (and 127.0.0.1); Node
#    trusts the CA through NODE_EXTRA_CA_CERTS, so the scanner sees a
#    verified certificate (an unverified one fails the HSTS test).
# 4. magnetar-gateway alone, MAGNETAR_ENV=production, with TLS and a CORS
#    allow-list; no other service is needed for GET /, /robots.txt and a
#    CORS preflight.
# 5. Prints the grade, the score and each test; exits non-zero unless A+.
#
# Environment: MAGNETAR_BUILD (default <repo>/build), OBSERVATORY_DIR (the
# install, default <repo>/build/observatory), OBSERVATORY_HOST
# (default localhost; must resolve to 127.0.0.1), OBSERVATORY_NO_NETNS=1 to
# scan on the host's loopback.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BUILD=${MAGNETAR_BUILD:-build}
[[ $BUILD == /* ]] || BUILD=$REPO/$BUILD
BIN=$BUILD/bin
# One install for every build (release, sanitizer): under the repo's build/,
# which git ignores.
OBS=${OBSERVATORY_DIR:-$REPO/build/observatory}
HOST=${OBSERVATORY_HOST:-localhost}
PORT=443

say() { printf 'observatory: %s\n' "$*"; }
die() { printf 'observatory: %s\n' "$*" >&2; exit 1; }

# ---- 1. the scanner, outside any namespace (npm needs the registry) -------
install_scanner() {
	local stamp want t0
	command -v node >/dev/null || die "node is not installed (Node >= 20 is needed)"
	command -v npm >/dev/null || die "npm is not installed"
	want=$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -d' ' -f1)
	stamp=$OBS/.installed
	if [[ -f $stamp && $(cat "$stamp") == "$want" &&
		-f $OBS/node_modules/@mdn/mdn-http-observatory/package.json ]]; then
		say "scanner already installed in $OBS"
	else
		t0=$SECONDS
		mkdir -p "$OBS"
		rm -f "$stamp"
		cp "$HERE/package.json" "$HERE/package-lock.json" "$OBS/"
		say "installing the scanner into $OBS (npm ci --ignore-scripts)"
		(cd "$OBS" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
			die "npm ci failed (is the npm registry reachable?)"
		echo "$want" >"$stamp"
		say "installed in $((SECONDS - t0)) s"
	fi
	# Every run: cheap, and an interrupted install cannot leave it missing.
	echo '{}' >"$OBS/node_modules/@mdn/mdn-http-observatory/conf/hsts-preload.json"
	cp "$HERE/scan.mjs" "$OBS/scan.mjs"
	say "scanner: @mdn/mdn-http-observatory $(node -p "require('$OBS/node_modules/@mdn/mdn-http-observatory/package.json').version"), node $(node --version)"
}

if [[ ${1-} != --in-netns ]]; then
	[[ -x $BIN/magnetar-gateway ]] || die "no $BIN/magnetar-gateway: run \`make all\` first"
	install_scanner
	if [[ ${OBSERVATORY_NO_NETNS-} != 1 && $(id -u) == 0 ]] && command -v unshare >/dev/null &&
		command -v ip >/dev/null && unshare --net true 2>/dev/null; then
		say "scanning in a network namespace of its own"
		exec unshare --net -- bash "${BASH_SOURCE[0]}" --in-netns
	fi
	say "scanning on the host's loopback (no network namespace): 127.0.0.1:$PORT must be free"
else
	ip link set lo up
fi

# ---- 2. a throwaway CA, a certificate for $HOST, the gateway ---------------
TMP=$(mktemp -d /tmp/magnetar-observatory.XXXXXX)
chmod 711 "$TMP" # the gateway drops to its own user and must reach var/ and run/
GW_PID=
cleanup() {
	local rc=$?
	if [[ -n $GW_PID ]] && kill -0 "$GW_PID" 2>/dev/null; then
		kill -TERM "$GW_PID" 2>/dev/null || true
		for _ in $(seq 1 100); do
			kill -0 "$GW_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$GW_PID" 2>/dev/null || true
		wait "$GW_PID" 2>/dev/null || true
	fi
	if [[ $rc != 0 && -f $TMP/gateway.log ]]; then
		echo "---- gateway log (last 30 lines but its config dump) ----"
		grep -v ' msg="config ' "$TMP/gateway.log" | tail -n 30
	fi
	rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(
	cd "$TMP"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj "/CN=Magnetar observatory test CA" \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
		-keyout ca.key -out ca.pem 2>/dev/null
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-subj "/CN=$HOST" -keyout tls.key -out tls.csr 2>/dev/null
	printf '%s\n' "basicConstraints=critical,CA:FALSE" \
		"keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
		"subjectAltName=DNS:$HOST,IP:127.0.0.1" >tls.ext
	openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
		-extfile tls.ext -out tls.crt 2>/dev/null
	chmod 600 tls.key ca.key
)

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
	die "127.0.0.1:$PORT is in use: stop what listens there, or run as root (namespace)"
fi

gw_env=(
	PATH=/usr/sbin:/usr/bin:/sbin:/bin
	HOME="${HOME:-/root}"
	MAGNETAR_ENV=production
	MAGNETAR_SANDBOX=enforce
	MAGNETAR_HTTP_ADDR="127.0.0.1:$PORT"
	MAGNETAR_DATA_DIR="$TMP/var"
	MAGNETAR_RUN_DIR="$TMP/run"
	MAGNETAR_TLS_CERT="$TMP/tls.crt"
	MAGNETAR_TLS_KEY="$TMP/tls.key"
	MAGNETAR_CORS_ORIGINS="https://app.$HOST"
	MAGNETAR_FINGERPRINT_KEY="$(openssl rand -hex 32)"
)
# In our own namespace port 80 is free: the plain-HTTP redirect listener
# answers there, and the scanner grades the redirection to https too.
[[ ${1-} == --in-netns ]] && gw_env+=(MAGNETAR_HTTP_REDIRECT_ADDR=127.0.0.1:80)
# A sanitizer build: production runs under seccomp, where LeakSanitizer's
# exit scan cannot work (as tests/integration/conftest.py does).
[[ -n ${ASAN_OPTIONS-} ]] && gw_env+=(ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0")
[[ -n ${UBSAN_OPTIONS-} ]] && gw_env+=(UBSAN_OPTIONS="$UBSAN_OPTIONS")

say "starting magnetar-gateway (production, TLS) on https://$HOST:$PORT/"
(cd "$TMP" && exec env -i "${gw_env[@]}" "$BIN/magnetar-gateway" >"$TMP/gateway.log" 2>&1) &
GW_PID=$!
# Ready = listening and locked down (privileges dropped, seccomp on): the
# scan sees the gateway as it serves in production. Read from its log, so no
# probe connection is needed. Without the other services the drop waits for
# their sockets a few seconds.
ready=
for _ in $(seq 1 300); do
	kill -0 "$GW_PID" 2>/dev/null || die "magnetar-gateway exited at start"
	if grep -q "listening on https://127.0.0.1:$PORT" "$TMP/gateway.log" &&
		grep -Eq 'msg="(privileges dropped|not root: running)' "$TMP/gateway.log"; then
		ready=1
		break
	fi
	sleep 0.1
done
[[ -n $ready ]] || die "magnetar-gateway was not listening and locked down within 30 s"
if (exec 3<>"/dev/tcp/127.0.0.1/80") 2>/dev/null; then
	say "note: something listens on 127.0.0.1:80; the scanner's redirection test grades it"
fi

# ---- 3. the scan ----------------------------------------------------------
say "scanning $HOST"
t0=$SECONDS
set +e
(cd "$OBS" && exec env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY \
	-u all_proxy -u ALL_PROXY -u NODE_OPTIONS NODE_EXTRA_CA_CERTS="$TMP/ca.pem" \
	timeout 180 node scan.mjs "$HOST")
rc=$?
set -e
say "scan took $((SECONDS - t0)) s"
kill -0 "$GW_PID" 2>/dev/null || die "magnetar-gateway died during the scan"
case $rc in
0) say "PASS: grade A+" ;;
1) die "FAIL: the grade is not A+" ;;
2) die "FAIL: the scanner refused to grade the gateway (see above)" ;;
*) die "FAIL: the scanner failed (exit $rc)" ;;
esac
