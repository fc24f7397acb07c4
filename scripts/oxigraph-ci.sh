#!/usr/bin/env bash
# A throw-away, loopback-only `oxigraph serve` (PyPI package `oxigraph`) for tests.
#
#   scripts/oxigraph-ci.sh start    install if missing (own venv), start, write $OX_DIR/env
#   scripts/oxigraph-ci.sh stop     SIGTERM (SIGINT is ignored by a background job); only our pid
#   scripts/oxigraph-ci.sh status   running | stopped
#
# `oxigraph serve` has no authentication at all: anyone who reaches the port can write, so it
# is bound to 127.0.0.1 only and holds nothing but test data.
#
# Env (all optional): OX_DIR (default ${TMPDIR:-/tmp}/sasci-kg-oxigraph), OX_PORT (17879; a busy
# port is replaced by a free one), OX_BIN (an `oxigraph` binary to use), OX_VERSION (0.5.13).
set -euo pipefail

OX_DIR=${OX_DIR:-${TMPDIR:-/tmp}/sasci-kg-oxigraph}
OX_VERSION=${OX_VERSION:-0.5.13}
PIDFILE=$OX_DIR/oxigraph.pid
PORTFILE=$OX_DIR/port
ENVFILE=$OX_DIR/env

log() { echo "[oxigraph-ci] $*" >&2; }
die() { log "$*"; exit 1; }

port_free() { ! python3 - "$1" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket()
s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
EOF
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

find_bin() {
  if [ -n "${OX_BIN:-}" ]; then echo "$OX_BIN"; return; fi
  if command -v oxigraph >/dev/null 2>&1; then command -v oxigraph; return; fi
  if [ ! -x "$OX_DIR/venv/bin/oxigraph" ]; then
    log "installing oxigraph==$OX_VERSION from PyPI into $OX_DIR/venv"
    python3 -m venv "$OX_DIR/venv"
    "$OX_DIR/venv/bin/pip" install -q "oxigraph==$OX_VERSION"
  fi
  echo "$OX_DIR/venv/bin/oxigraph"
}

# Our pid, alive and not a zombie (an orphan may wait a while to be reaped), and still
# oxigraph (the pid file may outlive the process, and the pid be reused).
running() {
  [ -f "$PIDFILE" ] || return 1
  local pid state
  pid=$(cat "$PIDFILE")
  [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
  [ "$state" != Z ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "oxigraph"
}

start() {
  mkdir -p "$OX_DIR"
  chmod 700 "$OX_DIR"
  local bin port
  bin=$(find_bin)
  [ -x "$bin" ] || die "no oxigraph binary at $bin"
  if running; then
    port=$(cat "$PORTFILE")
    log "already running (pid $(cat "$PIDFILE"))"
  else
    port=${OX_PORT:-17879}
    port_free "$port" || port=$(free_port)
    echo "$port" > "$PORTFILE"
    # --timeout-s bounds each query inside the server, as a second guard behind the client's.
    nohup "$bin" serve --location "$OX_DIR/db" --bind "127.0.0.1:$port" --timeout-s 60 \
      > "$OX_DIR/serve.log" 2>&1 &
    echo $! > "$PIDFILE"
  fi
  local t0=$SECONDS
  until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/query?query=ASK%7B%7D" 2>/dev/null; do
    running || { cat "$OX_DIR/serve.log" >&2; die "oxigraph exited during start"; }
    [ $((SECONDS - t0)) -gt 60 ] && die "no HTTP answer on 127.0.0.1:$port after 60 s"
    sleep 0.1
  done
  (umask 077; cat > "$ENVFILE" <<EOF
SASCI_KG_BACKEND=remote
SASCI_KG_ENGINE=oxigraph
SASCI_KG_QUERY_URL=http://127.0.0.1:$port/query
SASCI_KG_UPDATE_URL=http://127.0.0.1:$port/update
SASCI_KG_GSP_URL=http://127.0.0.1:$port/store
SASCI_KG_AUTH=none
EOF
)
  log "up (pid $(cat "$PIDFILE")) on 127.0.0.1:$port; settings in $ENVFILE"
}

stop() {
  if ! [ -f "$PIDFILE" ]; then log "not running"; return 0; fi
  local pid
  pid=$(cat "$PIDFILE")
  if running; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do running || break; sleep 0.1; done
    if running; then log "still there; KILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$PIDFILE" "$ENVFILE"
  log "stopped"
}

status() { if running; then echo running; else echo stopped; fi; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
