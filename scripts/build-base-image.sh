#!/usr/bin/env bash
# A local Python 3.11 base image made from Debian packages, for building jouletrace's images
# where no image registry is reachable (CI, the dev machines): Debian bookworm's python3 is 3.11,
# the version the Dockerfiles' default base (python:3.11-slim) carries.
#
#   scripts/build-base-image.sh [IMAGE]      (default localhost/jouletrace-base:bookworm)
#
# Builds once: does nothing when IMAGE exists. Needs root, podman and debootstrap
# (scripts/install-system-deps.sh). About 3 minutes and 300 MB the first time.
set -euo pipefail
image="${1:-localhost/jouletrace-base:bookworm}"
mirror="${JOULETRACE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if podman image exists "$image"; then exit 0; fi
rootfs="$(mktemp -d /var/tmp/jouletrace-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" >/dev/null
# what the image needs no more: package lists and caches
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "built $image"
