#!/usr/bin/env bash
# Regenerates the committed protobuf/gRPC Python code from protos/.
# Usage: scripts/gen_protos.sh [OUT_DIR]   (default: quartz_cluster/proto)
# The proto package quartz.v1 lives under protos/quartz/v1; the generated modules go to
# OUT_DIR/quartz/v1 and their cross-imports are rewritten to the installed package path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/quartz_cluster/proto}
py=${PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=python3
mkdir -p "$out/quartz/v1"
rm -f "$out"/quartz/v1/*_pb2*.py "$out"/quartz/v1/*_pb2*.pyi
"$py" -m grpc_tools.protoc -I "$root/protos" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$root"/protos/quartz/v1/*.proto
for f in "$out"/quartz/v1/*_pb2*.py "$out"/quartz/v1/*_pb2*.pyi; do
  sed -i -e 's/^from quartz\.v1 import/from quartz_cluster.proto.quartz.v1 import/' "$f"
done
touch "$out/__init__.py" "$out/quartz/__init__.py" "$out/quartz/v1/__init__.py"
