#!/usr/bin/env bash
# Prepare, on the controller, everything the Docker hosts need to build the
# test and demo MCP server images without any network (the air-gapped path):
#   .cache/images/fleetops-runtime-trixie.tar  the runtime base image (docker save)
#   .cache/mcp-images/reference/               reference server build context
#   .cache/mcp-images/time/                    mcp-server-time (PyPI) + fleetops-stdio-bridge
#   .cache/mcp-images/memory/                  server-memory (npm, stateful) + the bridge
#   .cache/mcp-images/everything/              server-everything (npm) + the bridge
#   .cache/mcp-images/broken/                  an image that fails at start
#   .cache/images/fleetops-mcp-reference-1.0.0.tar
#                                              the reference image built here and
#                                              saved, for the image_source: archive path
# Wheels are fetched for the runtime image's Python (3.13), so they need not
# match this machine's Python. Re-running reuses what is already there.
set -euo pipefail
# tests/harness/run.sh makes these once before it runs scenarios side by
# side, so that one scenario's prepare never rewrites them under another.
if [ -n "${FLEETOPS_MCP_IMAGES_READY:-}" ]; then
  echo "mcp images: made once by tests/harness/run.sh (FLEETOPS_MCP_IMAGES_READY)"
  exit 0
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SRC="$ROOT/tests/harness/mcp-images"
OUT="$ROOT/.cache/mcp-images"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
ARCH=$(uname -m)
mkdir -p "$OUT" "$ROOT/.cache/images"

wheels() {
  local dest="$1" reqs="$2" stamp
  stamp=$(cat "$reqs" | sha256sum | cut -c1-16)
  if [ -f "$dest/.stamp" ] && [ "$(cat "$dest/.stamp")" = "$stamp" ]; then
    return 0
  fi
  rm -rf "$dest" && mkdir -p "$dest"
  "$PY" -m pip download -q --disable-pip-version-check --dest "$dest" \
    --only-binary=:all: --implementation cp --python-version 3.13 --abi cp313 --abi abi3 --abi none \
    --platform "manylinux2014_${ARCH}" --platform "manylinux_2_17_${ARCH}" \
    --platform "manylinux_2_28_${ARCH}" --platform "manylinux_2_34_${ARCH}" \
    -r "$reqs" pip
  # A stable name for the pip wheel that runs the install inside the build.
  mv "$dest"/pip-*.whl "$dest/pip.whl"
  echo "$stamp" >"$dest/.stamp"
}

# The npm packages of a context's package.json as one tarball (node_modules),
# installed on this machine once per package.json.
node_bundle() {
  local name="$1" cache="$ROOT/.cache/npm-$1"
  if [ ! -f "$cache/npm.tar.gz" ] || ! cmp -s "$SRC/$name/package.json" "$cache/package.json"; then
    rm -rf "$cache" && mkdir -p "$cache"
    cp "$SRC/$name/package.json" "$cache/"
    (cd "$cache" && npm install --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
    tar -C "$cache" -czf "$cache/npm.tar.gz" node_modules package.json
  fi
  cp "$cache/npm.tar.gz" "$OUT/$name.new/"
  rm -f "$OUT/$name.new/package.json"
}

context() {
  local name="$1"
  rm -rf "$OUT/$name.new" && mkdir -p "$OUT/$name.new"
  cp -a "$SRC/$name/." "$OUT/$name.new/"
}

# The collection's stdio bridge, as the command the role runs (mode 0755 is
# kept: COPY preserves the context's file modes).
bridge() {
  install -m 0755 "$ROOT/roles/mcp_server/files/stdio_bridge/fleetops_stdio_bridge.py" \
    "$OUT/$1.new/fleetops-stdio-bridge"
}

# Runtime base image, saved once per image id.
runtime_id=$(docker image inspect -f '{{.Id}}' fleetops/runtime:trixie)
archive="$ROOT/.cache/images/fleetops-runtime-trixie.tar"
if [ "$(cat "$archive.id" 2>/dev/null)" != "$runtime_id" ]; then
  docker save -o "$archive" fleetops/runtime:trixie
  echo "$runtime_id" >"$archive.id"
fi
echo "runtime base: $archive ($(du -h "$archive" | cut -f1))"

# Reference server.
context reference
cp "$ROOT/roles/mcp_server/files/reference_server/fleetops_reference_server.py" \
   "$ROOT/roles/mcp_server/files/reference_server/requirements.txt" "$OUT/reference.new/"
wheels "$ROOT/.cache/wheels/reference" "$OUT/reference.new/requirements.txt"
cp -a "$ROOT/.cache/wheels/reference" "$OUT/reference.new/wheels"
rm -f "$OUT/reference.new/wheels/.stamp"

# mcp-server-time behind the bridge (no Node.js needed).
context time
wheels "$ROOT/.cache/wheels/time" "$OUT/time.new/requirements.txt"
cp -a "$ROOT/.cache/wheels/time" "$OUT/time.new/wheels"
rm -f "$OUT/time.new/wheels/.stamp"
bridge time


# @modelcontextprotocol/server-memory (npm), a stateful third-party server
# that keeps its knowledge graph in a file, behind the bridge.
context memory
node_bundle memory
bridge memory

# @modelcontextprotocol/server-everything (npm): tools, resources, prompts,
# progress notifications and sampling, behind the bridge.
context everything
node_bundle everything
bridge everything

context broken

for name in reference time memory everything broken; do
  rm -rf "$OUT/$name" && mv "$OUT/$name.new" "$OUT/$name"
  echo "build context $name: $(du -sh "$OUT/$name" | cut -f1)"
done

# The reference image built on this machine and saved: what an air-gapped
# site receives when images are built elsewhere. Saved again only when the
# built image changes.
DOCKER_BUILDKIT=0 docker build -q --network none --build-arg VERSION=1.0.0 \
  -t fleetops/mcp-reference-archived:1.0.0 "$OUT/reference" >/dev/null
archived_id=$(docker image inspect -f '{{.Id}}' fleetops/mcp-reference-archived:1.0.0)
archived="$ROOT/.cache/images/fleetops-mcp-reference-1.0.0.tar"
if [ "$(cat "$archived.id" 2>/dev/null)" != "$archived_id" ]; then
  docker save -o "$archived" fleetops/mcp-reference-archived:1.0.0
  echo "$archived_id" >"$archived.id"
fi
echo "image archive: $archived ($(du -h "$archived" | cut -f1))"
