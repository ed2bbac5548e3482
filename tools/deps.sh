#!/bin/sh
# Installs the Debian 12 packages Magnetar needs to build, run and test.
# As root it runs apt-get; otherwise it prints the exact command to run.
# Fast when everything is present: dpkg is asked first, apt only if needed.
set -eu
PKGS="build-essential pkg-config clang clang-format protobuf-c-compiler libprotobuf-c-dev
libnng-dev libsqlite3-dev libssl-dev libcurl4-openssl-dev libmicrohttpd-dev libwslay-dev
libjansson-dev libargon2-dev liboath-dev libseccomp-dev libcmocka-dev
python3 python3-pytest python3-requests python3-websocket python3-jwt python3-cryptography sqlite3 wrk nginx-light curl
protobuf-compiler nng-utils prometheus docker-compose systemd sqlmap iproute2 xxd"
missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0
cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" = 0 ]; then
	echo "deps: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing
else
	echo "deps: missing packages; run as root:"
	echo "  sudo apt-get update && sudo $cmd"
	exit 1
fi
