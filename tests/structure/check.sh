#!/bin/sh
# check.sh — the design's boundaries, on the sources and on the built
# binaries (docs/architecture.md, "Layout"). Run by `make structure`, which
# `make test` runs first. Each failed rule prints one line; exit 1 if any.
#
#   1. common/ and lib/ are mechanism: they include nothing of gateway/,
#      services/, tools/.
#   2. No service includes another service's headers; the gateway and the
#      tools include no service's headers either, but for one exception: the
#      supervisor's tools/magnetar/programs.c includes each program's vars.h
#      (its variable table), and nothing else of it.
#   2b. common/ names no program's variable: every MAGNETAR_* name a
#      program reads alone is declared in that program's vars.c.
#   3. Only auth can mint tokens: no signing code (our signer, or OpenSSL's
#      EVP_DigestSign / EVP_PKEY_sign) in the gateway's or terminal's binary.
#   4. magctl and the gateway link no service's code: no function a
#      services/*/ object defines is defined in either binary (code two
#      programs share is a lib/ library; `main` is everyone's).
#   5. A password hash is read in one place: the one SQL statement that
#      selects users.password_hash is store_user_password_hash's, and only
#      password_check calls it (no general struct carries a hash).
#   6. The gateway's request pipeline is one table (gateway/pipeline.c): a
#      stage's entry point or answer hook is named only by its own file and
#      pipeline.c, so no stage calls another, and every stage named in the
#      table is a function some gateway file defines.
set -u
bin=${1:-build/bin}
cd "$(dirname "$0")/../.." || exit 2
bad=0
fail() { echo "structure: $*"; bad=1; }

includes() { # <dir> <pattern>: the files under dir that include pattern
	grep -rlE "^#include \"($2)" "$1" --include='*.c' --include='*.h' 2>/dev/null
}

for d in common lib; do
	for f in $(includes "$d" 'gateway/|services/|tools/'); do
		fail "$f: $d/ includes a program's header"
	done
done
for s in services/*/; do
	s=${s%/}
	for f in $(grep -rlE '^#include "services/' "$s" 2>/dev/null); do
		grep -E '^#include "services/' "$f" | grep -v "\"$s/" >/dev/null &&
			fail "$f: includes another service's header"
	done
done
for f in $(includes gateway 'services/') $(includes tools 'services/'); do
	if [ "$f" = tools/magnetar/programs.c ]; then
		extra=$(grep -E '^#include "services/' "$f" | grep -vE '^#include "services/[a-z]+/vars\.h"$')
		[ -z "$extra" ] || fail "$f: includes more of a service than its vars.h: $extra"
		continue
	fi
	fail "$f: includes a service's header"
done
# Every variable a program's vars.c declares is named nowhere in common/
# (common's own, read by several programs, are in common/config.c's table).
for v in gateway/vars.c services/*/vars.c; do
	for name in $(grep -oE '"MAGNETAR_[A-Z0-9_]+"' "$v" | tr -d '"' | sort -u); do
		grep -rlw "$name" common --include='*.c' --include='*.h' >/dev/null &&
			fail "common/ names $name, which $v declares"
	done
done

for prog in magnetar-gateway magnetar-terminal; do
	b="$bin/$prog"
	[ -x "$b" ] || { fail "$b: not built"; continue; }
	syms=$(nm "$b" 2>/dev/null | grep -E ' [TtWw] (jwtsign_|jwt_sign)' | awk '{print $3}')
	[ -z "$syms" ] || fail "$prog links signing code: $syms"
	imps=$(nm -D --undefined-only "$b" 2>/dev/null | awk '{print $2}' |
		grep -E '^(EVP_DigestSign|EVP_DigestSignInit|EVP_DigestSignFinal|EVP_PKEY_sign|EVP_PKEY_sign_init)(@|$)')
	[ -z "$imps" ] || fail "$prog imports signing calls: $(echo $imps)"
done

# The objects beside the binaries: build/bin -> build/obj (the sanitizer
# builds keep the same shape under build/sanitize-*/). Only objects whose
# source is still in services/: one left behind by a file that moved out
# (into lib/) is no longer service code.
obj="$(dirname "$bin")/obj"
svc_syms=$(for o in "$obj"/services/*/*.o; do
	src=${o#"$obj"/}
	[ -f "$o" ] && [ -f "${src%.o}.c" ] && nm --defined-only -g "$o"
done 2>/dev/null | awk '$2 == "T" && $3 != "main" {print $3}' | sort -u)
if [ -z "$svc_syms" ]; then
	fail "$obj/services: no service objects to compare against"
else
	for prog in magctl magnetar-gateway; do
		b="$bin/$prog"
		[ -x "$b" ] || { fail "$b: not built"; continue; }
		both=$(nm --defined-only "$b" 2>/dev/null | SVC_SYMS="$svc_syms" awk '
			BEGIN { n = split(ENVIRON["SVC_SYMS"], a, "\n"); for (i = 1; i <= n; i++) s[a[i]] = 1 }
			$2 == "T" && ($3 in s) { print $3 }' | sort -u)
		[ -z "$both" ] || fail "$prog links service code: $(echo $both)"
	done
fi

reads=$(grep -rnE 'SELECT[^;]*password_hash' services/auth --include='*.c' | wc -l)
[ "$reads" = 1 ] || fail "services/auth: $reads SQL statements read password_hash (1 expected)"
callers=$(grep -rln 'store_user_password_hash(' services/auth --include='*.c' | sort | tr '\n' ' ')
[ "$callers" = "services/auth/password.c services/auth/store.c " ] ||
	fail "store_user_password_hash called outside password.c: $callers"
grep -qE '^[[:space:]]*char hash\[' services/auth/auth.h &&
	fail "services/auth/auth.h: a struct carries a password hash"

table=$(sed -n '/^static const struct stage pipeline_stages\[\] = {/,/^};/p' gateway/pipeline.c)
[ -n "$table" ] || fail "gateway/pipeline.c: no pipeline_stages table"
for fn in $(echo "$table" | grep -oE '\b[a-z_]+_(stage|answered)\b' | sort -u); do
	def=$(grep -lE "^(enum stage_rv|int) $fn\(" gateway/*.c)
	[ -n "$def" ] || { fail "gateway: $fn is in the pipeline table but defined nowhere"; continue; }
	users=$(grep -lw "$fn" gateway/*.c | grep -vx -e gateway/pipeline.c -e "$def" | tr '\n' ' ')
	[ -z "$users" ] || fail "gateway: $fn (of $def) is called outside pipeline.c: $users"
done

[ "$bad" = 0 ] && echo "structure: ok"
exit "$bad"
