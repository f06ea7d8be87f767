#!/usr/bin/env bash
# The whole test suite, in stages, with a wall-time table at the end.
#   tests/harness/run.sh                 every stage
#   tests/harness/run.sh lint unit       only these stages
#   SCENARIOS="mcp_servers" tests/harness/run.sh molecule
# Stages: host venv images lint sanity package unit molecule
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
export FLEETOPS_APT_PROXY_PORT=3142
# Plain logs: CI keeps them as text.
export NO_COLOR=1 ANSIBLE_NOCOLOR=1 PY_COLORS=0
# Scenarios in dependency order; each one is run once.
SCENARIOS="${SCENARIOS:-mcp_servers vault_secrets backup_failover fleet}"

declare -a ST_NAME=() ST_SECS=() ST_RESULT=()

table() {
  local total=0 i
  printf '\n%-28s %10s  %s\n' "stage" "wall (s)" "result"
  printf '%-28s %10s  %s\n' "----------------------------" "----------" "------"
  for i in "${!ST_NAME[@]}"; do
    printf '%-28s %10s  %s\n' "${ST_NAME[$i]}" "${ST_SECS[$i]}" "${ST_RESULT[$i]}"
    total=$(awk -v a="$total" -v b="${ST_SECS[$i]}" 'BEGIN { printf "%.1f", a + b }')
  done
  printf '%-28s %10s\n' "total" "$total"
}
trap table EXIT

stage() {
  local name="$1" start end rc secs
  shift
  printf '\n==> stage %s\n' "$name"
  start=$(date +%s.%N)
  "$@"
  rc=$?
  end=$(date +%s.%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  ST_NAME+=("$name"); ST_SECS+=("$secs")
  if [ "$rc" -eq 0 ]; then
    ST_RESULT+=("ok")
  else
    ST_RESULT+=("FAILED (exit $rc)")
    exit "$rc"
  fi
}

s_host() { tests/harness/setup-host.sh; }
s_venv() { tests/harness/venv.sh; }
s_images() { FLEETOPS_APT_PROXY="http://127.0.0.1:${FLEETOPS_APT_PROXY_PORT}" tests/harness/build-base-images.sh; }
s_lint() { ruff check && yamllint --strict . && ansible-lint --offline; }
s_sanity() { tests/harness/sanity.sh; }
s_package() { tests/harness/package-check.sh; }
s_unit() { python -m pytest -q -p no:cacheprovider tests/unit; }
s_molecule() { molecule test -s "$1"; }

main() {
  local stages=("$@")
  [ "${#stages[@]}" -gt 0 ] || stages=(host venv images lint sanity package unit molecule)
  for s in "${stages[@]}"; do
    case "$s" in
      host|venv|images|lint|sanity|package|unit) stage "$s" "s_$s" ;;
      molecule)
        for sc in $SCENARIOS; do stage "molecule:$sc" s_molecule "$sc"; done ;;
      *) echo "unknown stage: $s" >&2; exit 2 ;;
    esac
  done
}
main "$@"
