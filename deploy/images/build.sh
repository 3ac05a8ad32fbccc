#!/usr/bin/env bash
# Builds deskhub's desktop images without a container registry (see README.md beside this file).
#
#   bash deploy/images/build.sh kasm-test                 # deskhub/kasm-test:local, about 1 s
#   bash deploy/images/build.sh desktop [--with-browser]  # deskhub/desktop:local (or desktop-browser), about 70 s
#   bash deploy/images/build.sh all [--with-browser]
#   bash deploy/images/build.sh stack                     # deskhub/{postgres,redis,deskhub}:local for docker-compose.yml
#   bash deploy/images/build.sh postgres|redis|deskhub    # one of those
#   add --force to rebuild even when nothing changed
#
# Each image carries a label deskhub.content-hash computed from everything that goes into it
# (scripts, sources, options, the node binary); a build whose hash is already present is skipped,
# so running this again is cheap. Debian package versions are not part of the hash: use --force
# to pick up new packages. Needs root for debootstrap/chroot (all but kasm-test) and a running Docker.
set -euo pipefail

# A caller's NODE_OPTIONS (a test runner's --import hooks) is not for the node runs here, and
# names host paths that do not exist in a chroot.
unset NODE_OPTIONS
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
    kasm-test|desktop|postgres|redis|deskhub) targets+=("$arg") ;;
    all) targets+=(kasm-test desktop) ;;
    stack) targets+=(postgres redis deskhub) ;;
    --force) force=true ;;
    --with-browser) browser=true ;;
    *) echo "build.sh: unknown argument '$arg' (expected kasm-test, desktop, all, postgres, redis, deskhub, stack, --with-browser, --force)" >&2; exit 2 ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  echo "usage: bash deploy/images/build.sh kasm-test|desktop|all|postgres|redis|deskhub|stack [--with-browser] [--force]" >&2
  exit 2
fi

log() { printf 'build.sh: %s\n' "$*" >&2; }

# Scratch folders (and files), removed at exit; a chroot's /proc and /dev are unmounted first, because an
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
# When this run began: a debootstrap tarball newer than this was made by this run (--force).
run_started=$(mktemp /tmp/deskhub-build-started.XXXXXX)
scratch+=("$run_started")

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

# Imports the folder ROOT as IMAGE: each further argument is one Dockerfile instruction for
# `docker import --change`; the labels deskhub.image (NAME) and deskhub.content-hash are added.
# The image it replaces is removed, unless a container (even a stopped one) or another tag
# still uses it: rebuilds would otherwise pile up untagged images of hundreds of MB.
import_rootfs() {
  local root=$1 image=$2 name=$3 hash=$4 change previous
  shift 4
  local changes=()
  for change in "$@" "LABEL deskhub.image=$name" "LABEL deskhub.content-hash=$hash"; do
    changes+=(--change "$change")
  done
  previous=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
  tar -C "$root" -c . | docker import "${changes[@]}" - "$image" >/dev/null
  if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$image")" ]; then
    docker rmi "$previous" >/dev/null 2>&1 || true
  fi
}

# Copies the host's node binary to ROOT/usr/local/bin/node, with every library ldd names that
# ROOT lacks, at the same path (the loader included: it is the "=>"-less line). Into an empty
# folder that is all of them; into a Debian bookworm rootfs, usually none (the host is bookworm
# too), so node runs on the rootfs's own glibc.
copy_node() {
  local node=$1 root=$2 lib
  mkdir -p "$root/usr/local/bin"
  cp "$node" "$root/usr/local/bin/node"
  ldd "$node" | awk '/=> \//{print $3} /^[ \t]*\/[^ ]+ \(/{print $1}' | while read -r lib; do
    [ -e "$root$lib" ] && continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
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
  copy_node "$node" "$root"
  cp "$init" "$root/usr/local/bin/tini"
  node "$here/kasm-test/bundle.mjs" "$root/app/main.mjs"
  printf 'root:x:0:0:root:/root:/bin/false\nkasm-user:x:1000:1000::/home/kasm-user:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nkasm-user:x:1000:\n' >"$root/etc/group"

  import_rootfs "$root" "$image" kasm-test "$hash" \
    'ENTRYPOINT ["/usr/local/bin/tini", "--", "/usr/local/bin/node", "/app/main.mjs"]' \
    'EXPOSE 6901' \
    'ENV HOST=0.0.0.0 PORT=6901 TLS=true HOME=/home/kasm-user' \
    'USER 1000:1000' \
    'WORKDIR /home/kasm-user'
  log "built $image in $((SECONDS - start)) s"
}

# Every image below starts from Debian's minbase (debootstrap) with packages installed by apt in a
# chroot, which needs root and these tools.
need_rootfs_tools() {
  local image=$1 tool
  if [ "$(id -u)" != 0 ]; then
    log "building $image needs root (debootstrap and chroot); run it with sudo"
    exit 1
  fi
  for tool in debootstrap dpkg-deb; do
    command -v "$tool" >/dev/null || { log "$tool is missing: apt-get install -y $tool"; exit 1; }
  done
}

# A new scratch folder (removed at exit, unmounted first) for one image's rootfs.
new_root() {
  root=$(mktemp -d "/tmp/deskhub-$1.XXXXXX")
  scratch+=("$root")
}

# Fills the empty folder ROOT with Debian's minbase and PACKAGES, installed by apt in a chroot
# from $apt_sources and upgraded. POST (a function name, or "") then runs with ROOT as its
# argument, /proc and /dev still mounted, its output in the apt log. The result is cached as
# $cache/$suite-VARIANT-<key>.tar, the key hashing the package list and the sources, and a later
# build with the same key starts from it (what POST did included). The debootstrap itself,
# $cache/$suite-minbase.tar, is shared by every variant.
rootfs_with_packages() {
  local variant=$1 root=$2 post=$3
  shift 3
  local packages=("$@")
  mkdir -p "$cache"
  local base="$cache/$suite-minbase.tar" pkgkey
  pkgkey=$(echo "$suite ${packages[*]} $apt_sources" | sha256sum | cut -c1-16)
  local with_packages="$cache/$suite-$variant-$pkgkey.tar"
  if [ -f "$with_packages" ] && [ "$force" = false ]; then
    log "using cached rootfs $with_packages"
    tar -C "$root" -xf "$with_packages"
    return 0
  fi
  # One debootstrap at a time on this machine: a build of another variant running beside this
  # one (test files build their images in parallel) waits for it and uses its tarball.
  local lock
  exec {lock}>"$cache/.$suite-minbase.lock"
  flock "$lock"
  # (--force debootstraps again, once per run of this script.)
  if [ -f "$base" ] && { [ "$force" = false ] || [ "$base" -nt "$run_started" ]; }; then
    log "using cached debootstrap $base"
    tar -C "$root" -xf "$base"
  else
    log "debootstrap --variant=minbase $suite (about 30 s)"
    debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.debootstrap.log" 2>&1 \
      || { tail -20 "$root.debootstrap.log" >&2; exit 1; }
    rm -f "$root.debootstrap.log"
    tar -C "$root" -cf "$base.tmp.$$" . && mv "$base.tmp.$$" "$base"
  fi
  exec {lock}>&-
  log "apt-get install ${packages[*]}"
  # debootstrap --include cannot resolve some virtual dependencies (the desktop's
  # python3-cryptography), hence the chroot. policy-rc.d keeps packages from starting services.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  printf '%s\n' "$apt_sources" >"$root/etc/apt/sources.list"
  # No translated package descriptions (6 MB a download, of no use here); removed again below.
  printf 'Acquire::Languages "none";\n' >"$root/etc/apt/apt.conf.d/99deskhub-build"
  mount -t proc proc "$root/proc"
  mount --bind /dev "$root/dev"
  local apt_log="$cache/apt-$variant-$pkgkey.log"
  {
    chroot "$root" apt-get update
    DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get upgrade -y
    DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y --no-install-recommends "${packages[@]}"
    if [ -n "$post" ]; then "$post" "$root"; fi
  } >"$apt_log" 2>&1 || { tail -30 "$apt_log" >&2; exit 1; }
  umount -l "$root/proc"
  umount -l "$root/dev"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
    "$root/usr/sbin/policy-rc.d" "$root/etc/apt/apt.conf.d/99deskhub-build"
  tar -C "$root" -cf "$with_packages.tmp.$$" . && mv "$with_packages.tmp.$$" "$with_packages"
  # Older rootfs tarballs of this variant (another package list or recipe) are dead weight.
  find "$cache" -maxdepth 1 -name "$suite-$variant-????????????????.tar" ! -name "$(basename "$with_packages")" -delete
  find "$cache" -maxdepth 1 -name "apt-$variant-????????????????.log" ! -name "$(basename "$apt_log")" -delete
}

# The hash of an image's recipe: build.sh, the files named (by content, not path), and a line of
# settings (suite, packages, sources).
recipe_hash() {
  local settings=$1
  shift
  { sha256sum "$here/build.sh" "$@" | sed 's#  .*/# #'; echo "$settings"; } | sha256sum | cut -c1-64
}

# The desktop image: a Debian minbase with Xvfb, openbox, xterm, x11vnc and noVNC behind
# websockify on HTTPS 6901 with Kasm's basic auth and its two users, kasm_user and the
# view-only kasm_viewer (desktop/entrypoint.sh, desktop/kasm-websockify.py).
desktop_packages=(xvfb x11vnc python3-websockify openbox xterm openssl tini procps)

# Debian's novnc depends on nodejs; only its web files are needed. And the desktop's user.
desktop_post() {
  local root=$1 deb
  chroot "$root" sh -c 'cd /tmp && apt-get download novnc'
  deb=$(ls "$root"/tmp/novnc_*.deb)
  dpkg-deb -x "$deb" "$root/tmp/novnc"
  cp -a "$root/tmp/novnc/usr/share/novnc" "$root/usr/share/novnc"
  rm -rf "$root/tmp/novnc" "$deb"
  ln -sf vnc.html "$root/usr/share/novnc/index.html"
  chroot "$root" useradd --uid 1000 --user-group --create-home --home-dir /home/kasm-user --shell /bin/bash kasm-user
}

build_desktop() {
  local image=deskhub/desktop:local packages=("${desktop_packages[@]}")
  if [ "$browser" = true ]; then
    image=deskhub/desktop-browser:local
    packages+=(firefox-esr fonts-dejavu-core)
  fi
  local hash
  hash=$(recipe_hash "$suite ${packages[*]} $apt_sources" "$here/desktop/entrypoint.sh" "$here/desktop/kasm-websockify.py")
  up_to_date "$image" "$hash" && return 0
  need_rootfs_tools "$image"

  local start=$SECONDS variant=${image#deskhub/} root
  variant=${variant%:local}
  new_root "$variant"
  rootfs_with_packages "$variant" "$root" desktop_post "${packages[@]}"
  install -m 0755 "$here/desktop/entrypoint.sh" "$root/usr/local/bin/deskhub-desktop"
  install -m 0755 "$here/desktop/kasm-websockify.py" "$root/usr/local/bin/kasm-websockify"
  import_rootfs "$root" "$image" desktop "$hash" \
    'ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/usr/local/bin/deskhub-desktop"]' \
    'EXPOSE 6901' \
    'ENV HOME=/home/kasm-user DISPLAY=:1 VNC_RESOLUTION=1280x720 LANG=C.UTF-8' \
    'USER 1000:1000' \
    'WORKDIR /home/kasm-user'
  log "built $image in $((SECONDS - start)) s"
}

# The compose stack's Postgres (docker-compose.yml): Debian's postgresql-15 and an entrypoint
# with the official postgres image's contract (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB,
# PGDATA=/var/lib/postgresql/data, initialised on the first start), so either image fits the
# compose file.
postgres_packages=(postgresql-15 tini)

# The package's postinst made a cluster of its own; the entrypoint makes one in PGDATA instead.
# LLVM (and z3, which it needs) serve only Postgres's JIT for long analytic queries, which
# deskhub's short ones never use: 150 MB of the image, removed (Postgres then runs without JIT).
postgres_post() {
  local root=$1
  rm -rf "$root/var/lib/postgresql/15" "$root/etc/postgresql/15"
  chroot "$root" dpkg --purge --force-depends libllvm14 libz3-4
  rm -rf "$root"/usr/lib/postgresql/15/lib/llvmjit* "$root/usr/lib/postgresql/15/lib/bitcode"
  chroot "$root" install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
  chroot "$root" install -d -o postgres -g postgres -m 2775 /run/postgresql
}

build_postgres() {
  local image=deskhub/postgres:local hash
  hash=$(recipe_hash "$suite ${postgres_packages[*]} $apt_sources" "$here/postgres/entrypoint.sh")
  up_to_date "$image" "$hash" && return 0
  need_rootfs_tools "$image"
  local start=$SECONDS root
  new_root postgres
  rootfs_with_packages postgres "$root" postgres_post "${postgres_packages[@]}"
  install -m 0755 "$here/postgres/entrypoint.sh" "$root/usr/local/bin/deskhub-postgres"
  # Stop it with SIGINT, Postgres's fast shutdown (SIGTERM waits for every client to leave):
  # docker import cannot set STOPSIGNAL, so docker-compose.yml says stop_signal: SIGINT.
  import_rootfs "$root" "$image" postgres "$hash" \
    'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/deskhub-postgres"]' \
    'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PGDATA=/var/lib/postgresql/data LANG=C.UTF-8' \
    'EXPOSE 5432'
  log "built $image in $((SECONDS - start)) s"
}

# The compose stack's Redis: Debian's redis-server as the redis user, nothing saved to disk (the
# control plane republishes every route from Postgres when Redis comes back empty).
redis_packages=(redis-server tini)

build_redis() {
  local image=deskhub/redis:local hash
  hash=$(recipe_hash "$suite ${redis_packages[*]} $apt_sources")
  up_to_date "$image" "$hash" && return 0
  need_rootfs_tools "$image"
  local start=$SECONDS root
  new_root redis
  rootfs_with_packages redis "$root" "" "${redis_packages[@]}"
  import_rootfs "$root" "$image" redis "$hash" \
    'ENTRYPOINT ["/usr/bin/tini", "--"]' \
    'CMD ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"]' \
    'USER redis' \
    'WORKDIR /var/lib/redis' \
    'EXPOSE 6379'
  log "built $image in $((SECONDS - start)) s"
}

# The deskhub image (control plane and proxy; the command picks one), what deploy/Dockerfile
# builds where a registry can be reached: the host's node (Debian's own nodejs is 18, too old),
# tini, CA certificates, jemalloc (deploy/allocator.env) and iptables (the Docker runtime's host
# guard), and the app under /opt/deskhub: the sources git tracks minus tests and docs (so an
# edited README does not rebuild it), the built web UI, and a production install of the
# lockfile's dependencies (from pnpm's store when it holds them, else from the npm registry; no
# install scripts: the only native builds are ssh2's optional ones, for ssh:// DOCKER_HOST).
deskhub_packages=(tini ca-certificates libjemalloc2 iptables)
deskhub_sources=(package.json pnpm-lock.yaml pnpm-workspace.yaml tsconfig.base.json tsconfig.json migrations services packages
  ':!:services/*/test/**' ':!:packages/*/test/**' ':!:packages/testkit/**' ':!:packages/web-ui/client/**' ':!:packages/web-ui/public/**'
  ':!:*.md')

deskhub_post() {
  chroot "$1" useradd --uid 1000 --user-group --no-create-home --home-dir /opt/deskhub --shell /usr/sbin/nologin deskhub
}

build_deskhub() {
  local image=deskhub/deskhub:local node hash
  node=$(readlink -f "$(command -v node)")
  command -v git >/dev/null && git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 \
    || { log "building $image needs git and a git checkout (the image holds the files git tracks)"; exit 1; }
  # The web UI is served from its build (packages/web-ui/dist); its sources stay out of the image.
  # The services run compiled (scripts/build-dist.ts: each package's dist/, the web UI's dist-server/).
  (cd "$repo" && node --import tsx packages/web-ui/src/build-cli.ts --if-stale && node --import tsx scripts/build-dist.ts --if-stale) >&2
  local compiled=(packages/config/dist packages/route-stream/dist packages/access-token/dist packages/demo-desktop/dist packages/web-ui/dist-server services/proxy/dist services/control-plane/dist)
  local files=()
  mapfile -d '' files < <(git -C "$repo" ls-files -z -- "${deskhub_sources[@]}")
  hash=$( {
    recipe_hash "$suite ${deskhub_packages[*]} $apt_sources"
    sha256sum "$node" | cut -c1-64
    (cd "$repo" && sha256sum "${files[@]}" && find packages/web-ui/dist "${compiled[@]}" -type f -print0 | sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -c1-64)
  up_to_date "$image" "$hash" && return 0
  need_rootfs_tools "$image"

  local start=$SECONDS root
  new_root deskhub
  rootfs_with_packages deskhub "$root" deskhub_post "${deskhub_packages[@]}"
  copy_node "$node" "$root"
  chroot "$root" /usr/local/bin/node -e 0 || { log "the host's node does not run in the Debian $suite rootfs"; exit 1; }
  local app="$root/opt/deskhub"
  mkdir -p "$app/packages/web-ui"
  (cd "$repo" && printf '%s\0' "${files[@]}" | tar --null -T - -cf -) | tar -C "$app" -xf -
  cp -a "$repo/packages/web-ui/dist" "$app/packages/web-ui/dist"
  local dir
  for dir in "${compiled[@]}"; do cp -a "$repo/$dir" "$app/$dir"; done
  local pnpm=(npx -y pnpm@10) install_log="$root.pnpm.log"
  if ! (cd "$app" && COREPACK_ENABLE_STRICT=0 "${pnpm[@]}" install --prod --frozen-lockfile --ignore-scripts --offline) >"$install_log" 2>&1; then
    log "pnpm's store lacks some packages; installing from the npm registry"
    (cd "$app" && COREPACK_ENABLE_STRICT=0 "${pnpm[@]}" install --prod --frozen-lockfile --ignore-scripts --prefer-offline) >"$install_log" 2>&1 \
      || { tail -30 "$install_log" >&2; rm -f "$install_log"; exit 1; }
  fi
  rm -f "$install_log"
  chown -R root:root "$app"
  import_rootfs "$root" "$image" deskhub "$hash" \
    'ENTRYPOINT ["/usr/bin/tini", "--"]' \
    'CMD ["node", "--conditions=deskhub-dist", "services/proxy/dist/main.js"]' \
    'WORKDIR /opt/deskhub' \
    'USER deskhub' \
    'EXPOSE 8080'
  log "built $image in $((SECONDS - start)) s"
}

# The stack's images build side by side, each in a subshell with its own scratch folders: they
# spend most of their time waiting for the mirror and the disk, not for a CPU.
side_by_side=()
for target in "${targets[@]}"; do
  case "$target" in
    kasm-test) build_kasm_test ;;
    desktop) build_desktop ;;
    postgres|redis|deskhub)
      (scratch=(); trap cleanup EXIT; "build_$target") &
      side_by_side+=($!)
      ;;
  esac
done
failed=0
for pid in "${side_by_side[@]}"; do
  wait "$pid" || failed=1
done
exit $failed
