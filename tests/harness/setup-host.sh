#!/usr/bin/env bash
# Prepare this machine (Debian 12, root) for the test suite, idempotently:
#   packages   Debian packages the harness needs
#   dockerd    a running Docker engine (started here when none answers)
#   aptcache   apt-cacher-ng on :3142, the apt cache the test containers share
#   promtool   Debian's promtool in .cache/bin (unpacked, not installed: no
#              Prometheus server starts here) for the alert rule unit tests
# Usage: tests/harness/setup-host.sh [packages|dockerd|aptcache|promtool ...] (default: all)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# logrotate: the log_rotation unit tests run real rotations with it; nftables:
# the firewall unit tests check the rendered table with nft -c; nginx-light
# and its njs module: the gateway unit tests check the rendered nginx.conf
# with nginx -t and run it for a few seconds on loopback; age: the backup
# unit tests encrypt and decrypt archives with real keys; mtail: the gateway
# metrics unit tests run the shipped program on audit log lines.
HOST_PACKAGES=(docker.io debootstrap apt-cacher-ng python3-venv make curl logrotate nftables
  nginx-light libnginx-mod-http-js age mtail)
# npm fetches the npm MCP servers for the test images; only the
# package files are used (they run on the image's Node.js), so Debian's npm
# does, but a machine that already has npm keeps its own.

need_root() {
  [ "$(id -u)" -eq 0 ] || { echo "the test harness must run as root" >&2; exit 1; }
}

packages() {
  local missing=()
  for pkg in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  if [ "${#missing[@]}" -eq 0 ]; then
    echo "host packages: present"
    return 0
  fi
  echo "host packages: installing ${missing[*]}"
  apt-get update -qq
  # Do not let package scripts start services: the harness starts what it needs.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq \
    -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
}

dockerd_up() {
  if docker info >/dev/null 2>&1; then
    echo "dockerd: running"
    return 0
  fi
  echo "dockerd: starting"
  nohup dockerd >/var/log/fleetops-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { echo "dockerd: up"; return 0; }
    sleep 1
  done
  tail -n 20 /var/log/fleetops-dockerd.log >&2
  echo "dockerd did not come up within 60 s" >&2
  return 1
}

aptcache_up() {
  if curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:3142/acng-report.html 2>/dev/null \
     || curl -sS -o /dev/null --max-time 5 http://127.0.0.1:3142/ 2>/dev/null; then
    echo "apt cache: running on :3142"
    return 0
  fi
  echo "apt cache: starting apt-cacher-ng on :3142"
  install -d -o apt-cacher-ng -g apt-cacher-ng /run/apt-cacher-ng /var/cache/apt-cacher-ng /var/log/apt-cacher-ng
  start-stop-daemon --start --chuid apt-cacher-ng --exec /usr/sbin/apt-cacher-ng -- \
    -c "$HERE/apt-cacher-ng" ForeGround=0 pidfile=/run/apt-cacher-ng/pid
  for _ in $(seq 1 20); do
    curl -sS -o /dev/null --max-time 2 http://127.0.0.1:3142/ 2>/dev/null && return 0
    sleep 0.5
  done
  echo "apt-cacher-ng did not answer on :3142" >&2
  return 1
}

promtool_get() {
  local dest work
  dest="$(cd "$HERE/../.." && pwd)/.cache/bin/promtool"
  if [ -x "$dest" ]; then
    echo "promtool: present"
    return 0
  fi
  echo "promtool: unpacking Debian's prometheus package into .cache/bin"
  work=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  (cd "$work" && { apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus; }; })
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  install -D -m 0755 "$work/root/usr/bin/promtool" "$dest"
  "$dest" --version | head -n 1
}

need_root
steps=("$@")
[ "${#steps[@]}" -gt 0 ] || steps=(packages dockerd aptcache promtool)
for step in "${steps[@]}"; do
  case "$step" in
    packages) packages ;;
    dockerd) dockerd_up ;;
    aptcache) aptcache_up ;;
    promtool) promtool_get ;;
    *) echo "unknown step: $step" >&2; exit 2 ;;
  esac
done
