#!/usr/bin/env bash
# sqlmap.sh — sqlmap against POST /api/v1/auth/login and POST
# /api/v1/auth/register (issue 5): every JSON value is tried as an injection
# point with sqlmap's SQLite payloads. Passes when sqlmap reports that no
# tested parameter appears injectable; prints its verdict per route.
#
#   tests/bench/sqlmap.sh                 # LEVEL=2 RISK=1
#   LEVEL=3 RISK=2 tests/bench/sqlmap.sh  # longer, more payloads
#
# Needs the Debian package sqlmap. The stack runs in test mode with the
# gateway's rate limits off (a 429 would hide the answer sqlmap studies);
# auth's own brute-force limits stay on, as in production (see below).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-${MAGNETAR_BUILD:-$REPO/build}}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
LEVEL=${LEVEL:-2}
RISK=${RISK:-1}
command -v sqlmap >/dev/null || { echo "sqlmap.sh: apt-get install sqlmap" >&2; exit 2; }
TMP=$(mktemp -d /tmp/magnetar-sqlmap.XXXXXX)
# shellcheck source=tests/bench/lib.sh
. "$REPO/tests/bench/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# Auth throttles guesses per account and per client network (the defence
# sqlmap would otherwise mostly meet): each request claims a random
# X-Forwarded-For from a trusted proxy (sqlmap's xforwardedfor tamper), so
# the per-network limit stays out of the way; the per-account one still
# answers 429 to most password payloads (the password is only ever hashed).
export MAGNETAR_TRUSTED_PROXIES=127.0.0.1/32
start_stack test
# The user exists, so the unaltered login is a 200 and every payload that
# changed the query's truth would show as a different answer.
curl -s -o /dev/null "$URL/api/v1/auth/register" -H 'Content-Type: application/json' \
	-d '{"username":"sqlmapuser","password":"sqlmap-password-1"}'
status=0
LOGDIR=${LOGDIR:-$TMP}
for route in login register; do
	out=$LOGDIR/$route.txt
	sqlmap -u "$URL/api/v1/auth/$route" --method POST \
		--data '{"username":"sqlmapuser","password":"sqlmap-password-1"}' \
		--headers 'Content-Type: application/json' --dbms SQLite \
		--level "$LEVEL" --risk "$RISK" --ignore-code 400,401,409,429 --tamper xforwardedfor --batch --flush-session --disable-coloring \
		--output-dir "$TMP/out" >"$out" 2>&1 || true
	if grep -q "all tested parameters do not appear to be injectable" "$out"; then
		echo "$route: nothing injectable ($(grep -c "testing '" "$out") techniques tried," \
			"answers: $(grep -A1 "HTTP error codes" "$out" | tail -1 | sed 's/^ *//'))"
	else
		echo "$route: sqlmap did NOT clear it:"
		grep -E "injectable|vulnerable|CRITICAL|ERROR" "$out" | head -20
		status=1
	fi
done
exit $status
