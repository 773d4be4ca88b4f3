#!/usr/bin/env bash
# Makes this machine able to build and run the Taskcast images without a
# Docker engine or an image registry:
#   1. installs podman, runc and debootstrap from Debian when missing (root);
#   2. makes the base image localhost/taskcast-base:bookworm: Debian 12 minbase
#      from debootstrap, without its shells (like distroless/cc-debian12: glibc,
#      libgcc, libstdc++, no /bin/sh), imported with `podman import`.
# The root filesystem tarball is cached in ${TASKCAST_CACHE:-~/.cache/taskcast},
# outside the clone, so a rerun (or CI on the same machine) only re-imports it
# when podman's storage lost the image. Idempotent; prints the base image name.
# podman reads deploy/podman/containers.conf (CONTAINERS_CONF), never /etc's.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}
CACHE=${TASKCAST_CACHE:-$HOME/.cache/taskcast}
BASE=localhost/taskcast-base:bookworm
TARBALL=$CACHE/debian12-minbase-noshell.tar
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { echo "setup-podman: $*" >&2; }

missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v ip >/dev/null || missing+=(iproute2)
if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    log "missing ${missing[*]}: install them (Debian: apt-get install ${missing[*]})"; exit 1
  fi
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if podman image exists "$BASE"; then
  echo "$BASE"; exit 0
fi

mkdir -p "$CACHE"
if [[ ! -s $TARBALL ]]; then
  [[ $(id -u) == 0 ]] || { log "debootstrap needs root"; exit 1; }
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  log "debootstrap --variant=minbase bookworm (about a minute, cached in $CACHE)"
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # No shells, like the distroless runtime image: proves the manifests and
  # images never need one. Docs, manuals and apt lists are just weight.
  rm -f "$root"/usr/bin/{sh,dash,bash,rbash}
  rm -rf "$root"/usr/share/{doc,man,info,locale} "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*
  tar -C "$root" -cf "$TARBALL.part" .
  mv "$TARBALL.part" "$TARBALL"
fi
log "podman import $TARBALL as $BASE"
podman import --quiet "$TARBALL" "$BASE" >/dev/null
echo "$BASE"
