#!/usr/bin/env bash
# Builds deskhub's desktop images without a container registry (see README.md beside this file).
#
#   bash deploy/images/build.sh kasm-test                 # deskhub/kasm-test:local, about 1 s
#   bash deploy/images/build.sh desktop [--with-browser]  # deskhub/desktop:local (or desktop-browser), about 70 s
#   bash deploy/images/build.sh all [--with-browser]
#   add --force to rebuild even when nothing changed
#
# Each image carries a label deskhub.content-hash computed from everything that goes into it
# (scripts, sources, options, the node binary); a build whose hash is already present is skipped,
# so running this again is cheap. Debian package versions are not part of the hash: use --force
# to pick up new packages. Needs root for debootstrap/chroot (desktop only) and a running Docker.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${DESKHUB_IMAGE_CACHE:-/var/cache/deskhub-images}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
suite=bookworm
# The desktop's apt sources: security updates included, since users work inside these desktops.
apt_sources="deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main"

force=false
browser=false
targets=()
for arg in "$@"; do
  case "$arg" in
    kasm-test|desktop) targets+=("$arg") ;;
    all) targets+=(kasm-test desktop) ;;
    --force) force=true ;;
    --with-browser) browser=true ;;
    *) echo "build.sh: unknown argument '$arg' (expected kasm-test, desktop, all, --with-browser, --force)" >&2; exit 2 ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  echo "usage: bash deploy/images/build.sh kasm-test|desktop|all [--with-browser] [--force]" >&2
  exit 2
fi

log() { printf 'build.sh: %s\n' "$*" >&2; }

# Scratch folders, removed at exit; a chroot's /proc and /dev are unmounted first, because an
# rm -rf through a bind-mounted /dev would be a disaster.
scratch=()
cleanup() {
  local dir
  for dir in "${scratch[@]}"; do
    umount -l "$dir/proc" 2>/dev/null || true
    umount -l "$dir/dev" 2>/dev/null || true
    if mountpoint -q "$dir/dev" 2>/dev/null || mountpoint -q "$dir/proc" 2>/dev/null; then
      log "left $dir in place: still mounted"
    else
      rm -rf "$dir"
    fi
  done
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  log "Docker Engine not reachable (is dockerd running? try: bash scripts/ensure-services.sh)"
  exit 1
fi

# Prints the content-hash label of an image, or nothing when the image is absent.
image_hash() {
  docker image inspect -f '{{index .Config.Labels "deskhub.content-hash"}}' "$1" 2>/dev/null || true
}

# True (and says so) when the image exists with this hash and no --force was given.
up_to_date() {
  local image=$1 hash=$2
  if [ "$force" = false ] && [ "$(image_hash "$image")" = "$hash" ]; then
    log "$image is up to date (content hash ${hash:0:12}), skipped"
    return 0
  fi
  return 1
}

# The kasm-test image: the host's node binary, the libraries it links, the dynamic loader, the
# bundled demo desktop, and Docker's own init (tini-static, shipped with the engine) as PID 1:
# node as PID 1 would ignore a SIGTERM that arrives before it has installed a handler, so a
# desktop stopped in its first moments would wait for the kill timeout. Tied to this host's
# glibc and node; it exists for fast integration tests.
build_kasm_test() {
  local image=deskhub/kasm-test:local node init
  node=$(readlink -f "$(command -v node)")
  init=$(readlink -f "$(command -v docker-init || command -v tini-static || echo /nonexistent)")
  [ -x "$init" ] || { log "docker-init (tini-static) not found: apt-get install -y tini"; exit 1; }
  local hash
  hash=$( {
    sha256sum "$node" "$init" "$here/build.sh" "$here/kasm-test/bundle.mjs" "$repo/packages/demo-desktop/package.json"
    find "$repo/packages/demo-desktop/src" -type f -print0 | sort -z | xargs -0 sha256sum
    # The bundled dependency versions come from the lockfile.
    sha256sum "$repo/pnpm-lock.yaml"
  } | sed 's#  .*/# #' | sha256sum | cut -c1-64)
  up_to_date "$image" "$hash" && return 0

  local start=$SECONDS root
  root=$(mktemp -d /tmp/deskhub-kasm-test.XXXXXX)
  scratch+=("$root")
  mkdir -p "$root/usr/local/bin" "$root/app" "$root/tmp" "$root/etc" "$root/home/kasm-user"
  chmod 1777 "$root/tmp"
  chown 1000:1000 "$root/home/kasm-user"
  cp "$node" "$root/usr/local/bin/node"
  cp "$init" "$root/usr/local/bin/tini"
  # Every library ldd names, at the same path (the loader included: it is the "=>"-less line).
  ldd "$node" | awk '/=> \//{print $3} /^[ \t]*\/[^ ]+ \(/{print $1}' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  node "$here/kasm-test/bundle.mjs" "$root/app/main.mjs"
  printf 'root:x:0:0:root:/root:/bin/false\nkasm-user:x:1000:1000::/home/kasm-user:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nkasm-user:x:1000:\n' >"$root/etc/group"

  tar -C "$root" -c . | docker import \
    --change 'ENTRYPOINT ["/usr/local/bin/tini", "--", "/usr/local/bin/node", "/app/main.mjs"]' \
    --change 'EXPOSE 6901' \
    --change 'ENV HOST=0.0.0.0 PORT=6901 TLS=true HOME=/home/kasm-user' \
    --change 'USER 1000:1000' \
    --change 'WORKDIR /home/kasm-user' \
    --change 'LABEL deskhub.image=kasm-test' \
    --change "LABEL deskhub.content-hash=$hash" \
    - "$image" >/dev/null
  log "built $image in $((SECONDS - start)) s"
}

# The desktop image: a Debian minbase with Xvfb, openbox, xterm, x11vnc and noVNC behind
# websockify on HTTPS 6901 with Kasm's basic auth and its two users, kasm_user and the
# view-only kasm_viewer (desktop/entrypoint.sh, desktop/kasm-websockify.py).
desktop_packages=(xvfb x11vnc python3-websockify openbox xterm openssl tini procps)

build_desktop() {
  local image=deskhub/desktop:local packages=("${desktop_packages[@]}")
  if [ "$browser" = true ]; then
    image=deskhub/desktop-browser:local
    packages+=(firefox-esr fonts-dejavu-core)
  fi
  local hash
  hash=$( {
    sha256sum "$here/build.sh" "$here/desktop/entrypoint.sh" "$here/desktop/kasm-websockify.py" | sed 's#  .*/# #'
    echo "$suite ${packages[*]} $apt_sources"
  } | sha256sum | cut -c1-64)
  up_to_date "$image" "$hash" && return 0

  if [ "$(id -u)" != 0 ]; then
    log "building $image needs root (debootstrap and chroot); run it with sudo"
    exit 1
  fi
  for tool in debootstrap dpkg-deb; do
    command -v "$tool" >/dev/null || { log "$tool is missing: apt-get install -y $tool"; exit 1; }
  done

  local start=$SECONDS
  mkdir -p "$cache"
  local base="$cache/$suite-minbase.tar"
  local pkgkey
  pkgkey=$(echo "$suite ${packages[*]} $apt_sources" | sha256sum | cut -c1-16)
  local variant=${image#deskhub/}
  variant=${variant%:local}
  local with_packages="$cache/$suite-$variant-$pkgkey.tar"

  local root
  root=$(mktemp -d /tmp/deskhub-desktop.XXXXXX)
  scratch+=("$root")

  if [ -f "$with_packages" ] && [ "$force" = false ]; then
    log "using cached rootfs $with_packages"
    tar -C "$root" -xf "$with_packages"
  else
    if [ -f "$base" ] && [ "$force" = false ]; then
      log "using cached debootstrap $base"
      tar -C "$root" -xf "$base"
    else
      log "debootstrap --variant=minbase $suite (about 30 s)"
      debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.debootstrap.log" 2>&1 \
        || { tail -20 "$root.debootstrap.log" >&2; exit 1; }
      rm -f "$root.debootstrap.log"
      tar -C "$root" -cf "$base.tmp" . && mv "$base.tmp" "$base"
    fi
    log "apt-get install ${packages[*]}"
    # debootstrap --include cannot resolve python3-cryptography's virtual dependency, hence the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod +x "$root/usr/sbin/policy-rc.d"
    printf '%s\n' "$apt_sources" >"$root/etc/apt/sources.list"
    mount -t proc proc "$root/proc"
    mount --bind /dev "$root/dev"
    local apt_log="$cache/apt-$pkgkey.log"
    {
      chroot "$root" apt-get update
      DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get upgrade -y
      DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y --no-install-recommends "${packages[@]}"
      # Debian's novnc depends on nodejs; only its web files are needed.
      (cd "$root/tmp" && chroot "$root" sh -c 'cd /tmp && apt-get download novnc')
    } >"$apt_log" 2>&1 || { tail -30 "$apt_log" >&2; exit 1; }
    umount -l "$root/proc"
    umount -l "$root/dev"
    local deb
    deb=$(ls "$root"/tmp/novnc_*.deb)
    dpkg-deb -x "$deb" "$root/tmp/novnc"
    cp -a "$root/tmp/novnc/usr/share/novnc" "$root/usr/share/novnc"
    rm -rf "$root/tmp/novnc" "$deb"
    ln -sf vnc.html "$root/usr/share/novnc/index.html"
    chroot "$root" useradd --uid 1000 --user-group --create-home --home-dir /home/kasm-user --shell /bin/bash kasm-user
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root/usr/sbin/policy-rc.d"
    tar -C "$root" -cf "$with_packages.tmp" . && mv "$with_packages.tmp" "$with_packages"
    # Older rootfs tarballs of this variant (another package list or recipe) are dead weight.
    find "$cache" -maxdepth 1 -name "$suite-$variant-*.tar" ! -name "$(basename "$with_packages")" -delete
    find "$cache" -maxdepth 1 -name "apt-*.log" ! -name "apt-$pkgkey.log" -mmin +60 -delete
  fi

  install -m 0755 "$here/desktop/entrypoint.sh" "$root/usr/local/bin/deskhub-desktop"
  install -m 0755 "$here/desktop/kasm-websockify.py" "$root/usr/local/bin/kasm-websockify"
  tar -C "$root" -c . | docker import \
    --change 'ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/usr/local/bin/deskhub-desktop"]' \
    --change 'EXPOSE 6901' \
    --change 'ENV HOME=/home/kasm-user DISPLAY=:1 VNC_RESOLUTION=1280x720 LANG=C.UTF-8' \
    --change 'USER 1000:1000' \
    --change 'WORKDIR /home/kasm-user' \
    --change 'LABEL deskhub.image=desktop' \
    --change "LABEL deskhub.content-hash=$hash" \
    - "$image" >/dev/null
  log "built $image in $((SECONDS - start)) s"
}

for target in "${targets[@]}"; do
  case "$target" in
    kasm-test) build_kasm_test ;;
    desktop) build_desktop ;;
  esac
done
