#!/usr/bin/env bash
# The container stages' ground, shared by .ci/run and a developer: a Docker
# engine (Debian's docker.io, started here when none runs) and the offline
# Debian 12 base image the project's Dockerfile and the fresh-machine test
# start from. Registries are out of reach, so the base image is made with
# mmdebstrap from the Debian mirror and `docker import`ed, then tagged as the
# names deploy/Dockerfile uses (debian:12, debian:12-slim). It is cached by
# a key over everything that goes into it.
#
#   tests/container/docker.sh          engine up, base image present; prints its tag
set -euo pipefail

SUITES="bookworm bookworm-updates bookworm-security"
MIRROR=http://deb.debian.org/debian
SECURITY=http://deb.debian.org/debian-security

if ! command -v dockerd >/dev/null || ! command -v mmdebstrap >/dev/null; then
	[ "$(id -u)" = 0 ] || { echo "docker.sh: needs root to install docker.io and mmdebstrap" >&2; exit 1; }
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		docker.io mmdebstrap uidmap >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
	echo "docker.sh: starting dockerd (log: /tmp/magnetar-dockerd.log)" >&2
	nohup dockerd >/tmp/magnetar-dockerd.log 2>&1 &
	for _ in $(seq 1 60); do
		docker info >/dev/null 2>&1 && break
		sleep 0.5
	done
	docker info >/dev/null 2>&1 || { tail -20 /tmp/magnetar-dockerd.log >&2; exit 1; }
fi

key=$(printf '%s\n' "minbase" "$SUITES" "$MIRROR" "$SECURITY" "$(date -u +%Y-%W)" |
	sha256sum | cut -c1-12)
tag="magnetar-base:debian12-$key"
if ! docker image inspect "$tag" >/dev/null 2>&1; then
	echo "docker.sh: building $tag with mmdebstrap (about 20 s)" >&2
	mmdebstrap --quiet --variant=minbase bookworm - \
		"deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
		"deb $SECURITY bookworm-security main" | docker import - "$tag" >/dev/null
fi
docker tag "$tag" debian:12
docker tag "$tag" debian:12-slim
echo "$tag"
