#!/usr/bin/env bash
# The whole test suite, in stages, with a wall-time table at the end.
#   tests/harness/run.sh                 every stage (see below)
#   tests/harness/run.sh lint unit       only these stages, one after another
#   SCENARIOS="mcp_servers" tests/harness/run.sh molecule
# Stages: host venv images lint sanity package unit molecule lanes
#
# With no arguments it runs host, venv and images, then `lanes`: two lanes at
# once, because the fleet scenario alone is most of the wall time and spends
# much of it waiting (containers, timers, failovers), not on the CPU:
#   lane fleet: lint sanity package, then molecule:fleet
#   lane other: unit, then molecule:mcp_servers, vault_secrets,
#               backup_failover (each scenario has its own hosts, network
#               and subnet)
# The lanes are balanced by measurement: with lint, sanity and packaging in
# the other lane it ended about four minutes after the fleet lane in every
# clean-clone run (2026-12-07 and 08); those stages took about 100 s.
# Each lane's lines are printed as they come, prefixed with the lane's name.
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
# Where a lane writes its stages' rows (name<TAB>secs<TAB>result), for the
# table printed by the parent.
ROWS="${FLEETOPS_RUN_ROWS:-}"
# Where a failed stage leaves the last lines of its output (<stage>.tail),
# printed under the table; a lane writes into its parent's directory.
TAILS_DIR="${FLEETOPS_RUN_TAILS:-$(mktemp -d)}"
export FLEETOPS_RUN_TAILS="$TAILS_DIR"

table() {
  local total=0 i
  printf '\n%-36s %10s  %s\n' "stage" "wall (s)" "result"
  printf '%-36s %10s  %s\n' "------------------------------------" "----------" "------"
  for i in "${!ST_NAME[@]}"; do
    printf '%-36s %10s  %s\n' "${ST_NAME[$i]}" "${ST_SECS[$i]}" "${ST_RESULT[$i]}"
    # Indented rows are a lane's stages, inside the lanes row's wall time.
    [[ "${ST_NAME[$i]}" == " "* ]] && continue
    total=$(awk -v a="$total" -v b="${ST_SECS[$i]}" 'BEGIN { printf "%.1f", a + b }')
  done
  printf '%-36s %10s\n' "total (wall)" "$total"
  # The end of each failed stage's output, under the table: a failure is
  # named at the end of the log, where CI's excerpt of it is taken.
  local f
  for f in "${TAILS_DIR:-/nonexistent}"/*.tail; do
    [ -e "$f" ] || continue
    printf '\n---- the last lines of failed stage %s ----\n' "$(basename "$f" .tail)"
    cat "$f"
  done
  rm -rf "$TAILS_DIR"
}
# A lane prints no table of its own: the parent prints every lane's rows.
[ -n "${FLEETOPS_RUN_LANE:-}" ] || trap table EXIT

stage() {
  local name="$1" start end rc secs
  shift
  printf '\n==> stage %s\n' "$name"
  start=$(date +%s.%N)
  if [ "$1" = s_lanes ]; then
    # Not in a pipeline: it adds the lanes' rows to this shell's table.
    "$@"
    rc=$?
  else
    "$@" 2>&1 | tee "$TAILS_DIR/.current.$$"
    rc=${PIPESTATUS[0]}
  fi
  end=$(date +%s.%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  ST_NAME+=("$name"); ST_SECS+=("$secs")
  if [ "$rc" -eq 0 ]; then
    ST_RESULT+=("ok")
  else
    ST_RESULT+=("FAILED (exit $rc)")
  fi
  # Also as a line of the log, so that a run stopped from outside (CI's time
  # limit) still shows what each finished stage took.
  printf '==> stage %s took %s s: %s\n' "$name" "$secs" "${ST_RESULT[-1]}"
  [ -z "$ROWS" ] || printf '%s\t%s\t%s\n' "$name" "$secs" "${ST_RESULT[-1]}" >>"$ROWS"
  if [ "$rc" -ne 0 ] && [ -s "$TAILS_DIR/.current.$$" ]; then
    {
      tail -n 40 "$TAILS_DIR/.current.$$"
      # Last, where CI's short excerpt of the log is taken: the failed
      # tests by name and pytest's count line.
      printf -- '-- failed tests in %s --\n' "$name"
      grep -E '^(\[[a-z]+\] )?(FAILED|ERROR) [^ ]+::|^(\[[a-z]+\] )?=+ .*(failed|error).* in [0-9.]+s' \
        "$TAILS_DIR/.current.$$" | tail -n 25 || true
    } >"$TAILS_DIR/${name//[^A-Za-z0-9_:.-]/_}.tail"
  fi
  rm -f "$TAILS_DIR/.current.$$"
  [ "$rc" -eq 0 ] || exit "$rc"
}

s_host() { tests/harness/setup-host.sh; }
s_venv() { tests/harness/venv.sh; }
s_images() { FLEETOPS_APT_PROXY="http://127.0.0.1:${FLEETOPS_APT_PROXY_PORT}" tests/harness/build-base-images.sh; }
s_lint() { ruff check && yamllint --strict . && ansible-lint --offline; }
s_sanity() { tests/harness/sanity.sh; }
s_package() { tests/harness/package-check.sh; }
s_unit() { python -m pytest -q -rfE -p no:cacheprovider tests/unit; }
s_molecule() { molecule test -s "$1"; }

# One lane: these stages in order, in a child of this script, its lines
# prefixed with the lane's name; its rows land in $1.rows.
lane() {
  local name="$1" rows="$2"
  shift 2
  : >"$rows"
  FLEETOPS_RUN_ROWS="$rows" FLEETOPS_RUN_LANE=1 "$ROOT/tests/harness/run.sh" "$@" 2>&1 \
    | sed -u "s/^/[$name] /"
  return "${PIPESTATUS[0]}"
}

s_lanes() {
  local dir rc_fleet=0 rc_other=0 pid_fleet pid_other n s r
  dir=$(mktemp -d)
  # The build contexts every scenario's prepare copies: made once, here, so
  # that two scenarios never rewrite them under each other.
  tests/harness/mcp-images.sh || return 1
  export FLEETOPS_MCP_IMAGES_READY=1
  lane fleet "$dir/fleet.rows" lint sanity package molecule-fleet & pid_fleet=$!
  # The other lane is niced: the fleet's tests time failovers and VIP
  # moves.
  nice -n 10 bash -c "$(declare -f lane); ROOT='$ROOT' lane other '$dir/other.rows' unit molecule-others" \
    & pid_other=$!
  wait "$pid_other" || rc_other=$?
  wait "$pid_fleet" || rc_fleet=$?
  for l in other fleet; do
    while IFS=$'\t' read -r n s r; do
      ST_NAME+=("  [$l] $n"); ST_SECS+=("$s"); ST_RESULT+=("$r")
    done <"$dir/$l.rows"
  done
  rm -rf "$dir"
  [ "$rc_fleet" -eq 0 ] && [ "$rc_other" -eq 0 ]
}

main() {
  local stages=("$@")
  [ "${#stages[@]}" -gt 0 ] || stages=(host venv images lanes)
  for s in "${stages[@]}"; do
    case "$s" in
      host|venv|images|lint|sanity|package|unit) stage "$s" "s_$s" ;;
      lanes) stage "lanes (both, wall)" s_lanes ;;
      molecule)
        for sc in $SCENARIOS; do stage "molecule:$sc" s_molecule "$sc"; done ;;
      molecule-fleet) stage "molecule:fleet" s_molecule fleet ;;
      molecule-others)
        for sc in mcp_servers vault_secrets backup_failover; do stage "molecule:$sc" s_molecule "$sc"; done ;;
      *) echo "unknown stage: $s" >&2; exit 2 ;;
    esac
  done
}
main "$@"
