# Sourced by scripts/test: make sure Debian's chromium is installed (the
# status-page test loads the admin page in headless Chromium) and export
# CHROMIUM_BIN.
if ! command -v chromium >/dev/null 2>&1; then
  echo "chromium not found: installing Debian's chromium with apt-get" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >&2
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "could not find or install chromium; run 'apt-get install chromium'" >&2
  return 1 2>/dev/null || exit 1
fi
CHROMIUM_BIN="$(command -v chromium)"
export CHROMIUM_BIN
