# Sourced by scripts/test: make sure Debian's redis-server is installed (the
# rate-limit tests start their own Redis servers with it) and export
# REDIS_SERVER_BIN.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing Debian's redis-server with apt-get" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >&2
  # Tests start their own servers; the packaged one need not run.
  (command -v service >/dev/null 2>&1 && $SUDO service redis-server stop >/dev/null 2>&1) || true
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "could not find or install redis-server; run 'apt-get install redis-server'" >&2
  return 1 2>/dev/null || exit 1
fi
REDIS_SERVER_BIN="$(command -v redis-server)"
export REDIS_SERVER_BIN
echo "using Redis: $REDIS_SERVER_BIN ($("$REDIS_SERVER_BIN" --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p'))" >&2
