#!/usr/bin/env bash
# Build Debian base images with debootstrap and `docker import` (no container
# registry is reachable here). Two flavours:
#   host     fleetops/debian:<release>   systemd as PID 1, for Molecule test hosts
#   runtime  fleetops/runtime:<release>  python3 and nodejs, no init, the base
#                                        of the MCP server images built on the
#                                        Docker hosts in tests and the demo
#
#   tests/harness/build-base-images.sh [FLAVOUR:RELEASE ...]
#       (default: host:bookworm host:trixie runtime:trixie)
#
# Each image is tagged <repo>:<release>-<key>, where <key> is a hash of this
# script, the flavour and the release, and <repo>:<release> points at the
# newest build. An image whose key tag exists is not rebuilt, so editing this
# script (its package lists, its tweaks) is what triggers a rebuild.
#
# Environment:
#   FLEETOPS_DEBIAN_MIRROR  mirror URL (default http://deb.debian.org/debian)
#   FLEETOPS_APT_PROXY      http proxy for debootstrap downloads, e.g. the
#                           harness apt cache (default: none)
set -euo pipefail

MIRROR="${FLEETOPS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
HOST_PACKAGES="systemd,systemd-sysv,dbus,python3,python3-apt,sudo,iproute2,procps,ca-certificates,gnupg"
# nodejs >= 20 (trixie) runs the npm MCP servers; python3 runs fleetops-stdio-bridge.
RUNTIME_PACKAGES="python3,nodejs,ca-certificates,tzdata"
# Units that have no job inside a container.
MASKED_UNITS="getty.target console-getty.service systemd-remount-fs.service \
  sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
  dev-hugepages.mount systemd-udevd.service systemd-udev-trigger.service \
  systemd-modules-load.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer fstrim.timer"

script_hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-64)

key_for() {
  printf '%s %s %s %s\n' "$script_hash" "$1" "$2" "$MIRROR" | sha256sum | cut -c1-12
}

security_suite() {
  printf '%s-security' "$1"
}

build_one() {
  local flavour="${1%%:*}" release="${1#*:}" key tag root repo packages
  case "$flavour" in
    host) repo=fleetops/debian; packages="$HOST_PACKAGES" ;;
    runtime) repo=fleetops/runtime; packages="$RUNTIME_PACKAGES" ;;
    *) echo "unknown flavour '$flavour' (host or runtime)" >&2; return 2 ;;
  esac
  key=$(key_for "$flavour" "$release")
  tag="${repo}:${release}-${key}"
  if docker image inspect "$tag" >/dev/null 2>&1; then
    docker tag "$tag" "${repo}:${release}"
    echo "image ${tag}: up to date"
    return 0
  fi
  root=$(mktemp -d "/var/tmp/fleetops-rootfs-${release}.XXXXXX")
  trap 'rm -rf "$root"' RETURN
  echo "image ${tag}: building with debootstrap"
  http_proxy="${FLEETOPS_APT_PROXY:-}" debootstrap --variant=minbase \
    --include="$packages" --components=main "$release" "$root" "$MIRROR" \
    >"${root}.log" 2>&1 || { tail -n 30 "${root}.log" >&2; return 1; }
  rm -f "${root}.log"

  # apt sources in deb822 form, with updates and security.
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: ${MIRROR}
Suites: ${release} ${release}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: $(security_suite "$release")
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  # Installs in tests are non-interactive and skip docs to stay small.
  cat >"$root/etc/apt/apt.conf.d/90fleetops-test-host" <<'APTCONF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Retries "3";
APTCONF
  cat >"$root/etc/dpkg/dpkg.cfg.d/90fleetops-nodoc" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/locale/*
DPKG
  if [ "$flavour" = runtime ]; then
    finish_runtime "$root"
  else
    finish_host "$root"
  fi
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/cache/apt/*.bin "$root"/var/log/*.log

  if [ "$flavour" = runtime ]; then
    tar --numeric-owner -C "$root" -c . | docker import \
      --change "LABEL org.fleetops.base-image-key=${key}" - "$tag" >/dev/null
  else
    tar --numeric-owner -C "$root" -c . | docker import \
      --change 'ENV container=docker' \
      --change 'CMD ["/sbin/init"]' \
      --change "LABEL org.fleetops.base-image-key=${key}" \
      - "$tag" >/dev/null
  fi
  docker tag "$tag" "${repo}:${release}"
  # Superseded builds of the same flavour and release go.
  docker image ls --format '{{.Repository}}:{{.Tag}}' "$repo" \
    | grep -E "^${repo}:${release}-[0-9a-f]{12}$" | grep -vx "$tag" \
    | xargs -r docker rmi >/dev/null 2>&1 || true
  echo "image ${tag}: built"
}

# A runtime base carries no init and no docs.
finish_runtime() {
  local root="$1"
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  : >"$root/etc/machine-id"
}

finish_host() {
  local root="$1"
  for unit in $MASKED_UNITS; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
  done
  # Docker mounts /proc/sys read-only in unprivileged containers; a real host
  # has it writable and dockerd needs that (route_localnet when the userland
  # proxy is off). The net.* sysctls are per network namespace, so this only
  # touches the test host's own namespace.
  cat >"$root/etc/systemd/system/fleetops-test-procsys.service" <<'UNIT'
[Unit]
Description=Make /proc/sys writable, as on a real host (fleetops test image)
DefaultDependencies=no
Before=sysinit.target systemd-sysctl.service
ConditionPathIsReadWrite=!/proc/sys

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/mount -o remount,rw /proc/sys

[Install]
WantedBy=sysinit.target
UNIT
  mkdir -p "$root/etc/systemd/system/sysinit.target.wants"
  ln -sf ../fleetops-test-procsys.service "$root/etc/systemd/system/sysinit.target.wants/fleetops-test-procsys.service"
  # A fresh machine id per container, generated at first boot.
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id" "$root/etc/hostname"
}

main() {
  local releases=("$@") pids=() failed=0
  [ "${#releases[@]}" -gt 0 ] || releases=(host:bookworm host:trixie runtime:trixie)
  command -v debootstrap >/dev/null || { echo "debootstrap is not installed" >&2; exit 1; }
  docker info >/dev/null 2>&1 || { echo "no Docker engine answers" >&2; exit 1; }
  # Builds are mostly network-bound: run them side by side.
  for release in "${releases[@]}"; do
    build_one "$release" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
  done
  exit "$failed"
}

main "$@"
