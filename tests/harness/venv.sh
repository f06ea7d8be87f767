#!/usr/bin/env bash
# Create .venv from the pinned requirements (skipped when they have not
# changed) and the symlink tree that makes this checkout the collection
# fleetops.mcp for ansible, molecule and pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV="${VENV:-$ROOT/.venv}"
stamp="$VENV/.requirements.sha256"
want=$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "venv: installing pinned requirements into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -r "$ROOT/requirements.txt"
  echo "$want" >"$stamp"
else
  echo "venv: up to date"
fi
link="$ROOT/.cache/collections/ansible_collections/fleetops/mcp"
mkdir -p "$(dirname "$link")"
ln -sfn "$ROOT" "$link"
echo "collection: $link -> $ROOT"
