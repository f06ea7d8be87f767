#!/usr/bin/env bash
# ansible-test sanity on the collection's plugins (modules, module_utils,
# filters, doc fragments) and meta/runtime.yml, locally with the venv's
# Python 3.11. ansible-test wants to run inside .../ansible_collections/
# fleetops/mcp/; the symlink tree under .cache would resolve back to this
# checkout, so the files it checks are copied to
# $FLEETOPS_CACHE/sanity/ansible_collections/fleetops/mcp (a git repository of
# its own: ansible-test lists a tree's files with git, and the checkout's git
# ignores .cache).
#   tests/harness/sanity.sh                 the tests below
#   tests/harness/sanity.sh --test pylint   any other ansible-test sanity options
# Each test runs in a venv of its own pinned requirements that ansible-test
# creates under ~/.ansible/test/venv (from PyPI, once; later runs reuse it).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE="${FLEETOPS_CACHE:-$ROOT/.cache}"
tree="$CACHE/sanity/ansible_collections/fleetops/mcp"

# ansible-test puts pip into its venvs with get-pip.py from ci-files.testing.ansible.com, which this
# machine cannot reach: a stand-in in its download cache does the same from Python's bundled pip wheel.
pip_version=$(python -c 'import types; from ansible_test._internal.python_requirements import get_venv_packages as p
print(p(types.SimpleNamespace(version="3.11"))["pip"])')
get_pip="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if [ ! -e "$get_pip" ] || grep -q "fleetops.mcp get-pip stand-in" "$get_pip"; then
  mkdir -p "$(dirname "$get_pip")"
  cp "$ROOT/tests/harness/get_pip_standin.py" "$get_pip"
fi

rm -rf "$tree"
mkdir -p "$tree/tests"
cp -a "$ROOT/galaxy.yml" "$ROOT/LICENSE" "$ROOT/README.md" "$ROOT/meta" "$ROOT/plugins" "$tree/"
[ ! -d "$ROOT/tests/sanity" ] || cp -a "$ROOT/tests/sanity" "$tree/tests/"
find "$tree" -name __pycache__ -prune -exec rm -rf {} +
git -C "$tree" init -q

# Not run, and why:
#   changelog   changelogs/ is not part of the copied tree (this stage checks plugins/ and meta/)
#   pslint      needs PowerShell (pwsh), which is not installed here; plugins/ has no PowerShell either
#   shellcheck  needs the shellcheck binary, which is not installed here; plugins/ has no shell scripts
skip=(--skip-test changelog --skip-test pslint --skip-test shellcheck)

cd "$tree"
[ "$#" -gt 0 ] || set -- "${skip[@]}"
exec ansible-test sanity --local --python 3.11 --color no "$@"
