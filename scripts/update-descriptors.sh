#!/usr/bin/env bash
# Refresh assets/envoy-descriptors.bin.gz from the envoy-types crate that
# Cargo.lock pins: the FileDescriptorSet its Rust types were generated from.
# legate needs it to render resources as Envoy's JSON and to encode map
# fields in a canonical order. Run after bumping envoy-types.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(cargo metadata --format-version 1 | python3 -c '
import json, sys, os
m = json.load(sys.stdin)
p = next(p for p in m["packages"] if p["name"] == "envoy-types")
print(os.path.dirname(p["manifest_path"]))')
gzip -9 -n -c "$dir/src/generated/types.bin" > assets/envoy-descriptors.bin.gz
echo "updated from $dir"
