#!/usr/bin/env bash
# Build the collection tarball, install it offline into a scratch path next
# to the collections bundled with the `ansible` package (its dependencies),
# and check that ansible-doc reads the installed roles' and modules' docs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bundled=$(python -c 'import ansible_collections, os; print(os.path.dirname(list(ansible_collections.__path__)[0]))')
ansible-galaxy collection build "$ROOT" --output-path "$work" --force
tarball=$(ls "$work"/fleetops-mcp-*.tar.gz)
echo "built $(basename "$tarball") ($(du -h "$tarball" | cut -f1))"
# Nothing the build ignores may ship.
if tar -tzf "$tarball" | grep -E '^(molecule|tests|bench|\.ci|\.venv|\.cache)/'; then
  echo "the tarball carries files build_ignore should drop" >&2
  exit 1
fi
ANSIBLE_COLLECTIONS_PATH="$work/installed:$bundled" \
  ansible-galaxy collection install --offline -p "$work/installed" "$tarball"
export ANSIBLE_COLLECTIONS_PATH="$work/installed:$bundled"
printf "[defaults]\n" >"$work/ansible.cfg"
export ANSIBLE_CONFIG="$work/ansible.cfg"
export ANSIBLE_NOCOLOR=1 NO_COLOR=1
for role in $(cd "$ROOT/roles" && ls -d */tasks/main.yml 2>/dev/null | cut -d/ -f1); do
  case "$role" in _*) continue ;; esac
  out=$(ansible-doc -t role "fleetops.mcp.$role")
  grep -qE "ENTRY POINT: \*?main\*?" <<<"$out" || { echo "ansible-doc shows no entry point for role $role" >&2; exit 1; }
  # Every input in the installed role's argument_specs is shown.
  options=$(python -c 'import sys, yaml; print(" ".join(yaml.safe_load(open(sys.argv[1]))["argument_specs"]["main"]["options"]))' \
    "$work/installed/ansible_collections/fleetops/mcp/roles/$role/meta/argument_specs.yml")
  for option in $options; do
    grep -q -- "$option" <<<"$out" || { echo "ansible-doc for role $role lacks $option" >&2; exit 1; }
  done
  echo "ansible-doc -t role fleetops.mcp.$role: $(echo "$options" | wc -w) documented inputs"
done
for module in $(ls "$ROOT/plugins/modules" 2>/dev/null | sed -n 's/\.py$//p'); do
  ansible-doc -t module "fleetops.mcp.$module" >/dev/null
  echo "ansible-doc -t module fleetops.mcp.$module: ok"
done
