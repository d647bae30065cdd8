#!/usr/bin/env bash
# Builds the images the stack needs, from this machine's binaries, with no registry:
#   swarmlab:latest        labd, labctl and the tools the agent runs in task namespaces
#   swarmlab-redis:latest  redis-server
# Each image is FROM scratch with the binaries and the shared libraries they link (ldd).
# Then load them on every node: docker save swarmlab:latest swarmlab-redis:latest | docker -H NODE load
set -euo pipefail
cd "$(dirname "$0")/.."
export DOCKER_API_VERSION=1.41
DOCKER=${DOCKER:-/usr/bin/docker}
# SWARMLAB_BINS=DIR packs the labd and labctl found there instead (stripped): the chart test
# passes the debug build `cargo test` has just made, since a release build would add minutes to
# CI (and `cargo build` would rebuild the debug one: tests enable other features of tokio).
if [ -n "${SWARMLAB_BINS:-}" ]; then
  BINS=$SWARMLAB_BINS
else
  cargo build --release --locked --bins
  BINS=target/release
fi

libs_of() { # the shared libraries a binary links; none for a static one
  { ldd "$1" 2>/dev/null || true; } | { grep -o '/[^ ]*' || true; }
}

add() { # rootfs binary...
  local root=$1; shift
  for bin in "$@"; do
    local path; path=$(readlink -f "$(command -v "$bin" || echo "$bin")")
    mkdir -p "$root/usr/bin"
    cp "$path" "$root/usr/bin/$(basename "$bin")"
    libs_of "$path" | while read -r lib; do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  done
}

build() { # tag rootfs
  printf 'FROM scratch\nCOPY . /\nENV PATH=/usr/bin:/usr/sbin\n' > "$2/Dockerfile"
  $DOCKER build -q -t "$1" "$2" >/dev/null
  echo "built $1" >&2
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/swarmlab
add "$root" "$BINS/labd" "$BINS/labctl" tc ip nsenter ping busybox xtables-nft-multi
strip "$root/usr/bin/labd" "$root/usr/bin/labctl"
for t in iptables iptables-save iptables-restore; do ln -sf xtables-nft-multi "$root/usr/bin/$t"; done
# iptables' match and target modules (comment, mark, CT, NFQUEUE) and their libraries.
mkdir -p "$root/usr/lib/x86_64-linux-gnu"
cp -r /usr/lib/x86_64-linux-gnu/xtables "$root/usr/lib/x86_64-linux-gnu/"
for so in /usr/lib/x86_64-linux-gnu/xtables/*.so; do
  libs_of "$so" | while read -r lib; do mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; done
done
mkdir -p "$root/run/netns" "$root/tmp" "$root/etc"
echo 'hosts: files dns' > "$root/etc/nsswitch.conf"
# Certificate authorities for `labd --git https://…`.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$root/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
build swarmlab:latest "$root"

root=$tmp/redis
add "$root" redis-server
mkdir -p "$root/data" "$root/tmp"
build swarmlab-redis:latest "$root"
