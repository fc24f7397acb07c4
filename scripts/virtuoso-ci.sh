#!/usr/bin/env bash
# A throw-away, loopback-only OpenLink Virtuoso 7 (Debian's virtuoso-opensource) for tests.
#
#   scripts/virtuoso-ci.sh start    install if missing, create a private instance, start it,
#                                   write the endpoint settings to $VT_DIR/env (mode 600)
#   scripts/virtuoso-ci.sh stop     clean shutdown (checkpoint); ends only the pid it started
#   scripts/virtuoso-ci.sh status   running | stopped
#
# Safety: both listeners (HTTP and ISQL) are bound to 127.0.0.1; the dba and dav passwords are
# random and set before the server first listens, so the defaults dba/dba and dav/dav never
# exist; the app gets a dedicated writer account (SPARQL_UPDATE), never dba. The package's own
# system instance is never started (policy-rc.d), since it would listen on 0.0.0.0 as dba/dba.
#
# Env (all optional): VT_DIR (default ${TMPDIR:-/tmp}/sasci-kg-virtuoso), VT_HTTP_PORT (18890),
# VT_SQL_PORT (11111): a busy port is replaced by a free one, and the env file says which.
set -euo pipefail

VT_DIR=${VT_DIR:-${TMPDIR:-/tmp}/sasci-kg-virtuoso}
INI=$VT_DIR/virtuoso.ini
PIDFILE=$VT_DIR/virtuoso.pid
SECRETS=$VT_DIR/.secrets        # mode 600: DBA_PW, WRITER_PW, ports
ENVFILE=$VT_DIR/env
WRITER=sasci_writer

log() { echo "[virtuoso-ci] $*" >&2; }
die() { log "$*"; exit 1; }

# 20 letters and digits: virtuoso-t's +pwddba silently keeps only the first 20 characters.
random_pw() { python3 -c 'import secrets, string; a = string.ascii_letters + string.digits; print("".join(secrets.choice(a) for _ in range(20)))'; }

port_free() { ! python3 - "$1" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket()
s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
EOF
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

install_pkg() {
  command -v virtuoso-t >/dev/null 2>&1 && command -v isql-vt >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || die "virtuoso-t is missing and there is no apt-get to install it"
  log "installing virtuoso-opensource (Debian)"
  local added_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    # Keep the postinst from starting the system instance (0.0.0.0:8890/1111 with dba/dba).
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    added_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    virtuoso-opensource >/dev/null
  if [ "$added_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  command -v virtuoso-t >/dev/null 2>&1 || die "virtuoso-opensource installed but virtuoso-t is not on PATH"
}

# Our pid, alive and not a zombie (an orphan may wait a while to be reaped), and still
# virtuoso-t (the pid file may outlive the process, and the pid be reused).
running() {
  [ -f "$PIDFILE" ] || return 1
  local pid state
  pid=$(cat "$PIDFILE")
  [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
  [ "$state" != Z ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "virtuoso-t"
}

isql() {  # isql as dba; the password is on the command line only for this loopback instance
  isql-vt "127.0.0.1:$SQL_PORT" dba "$DBA_PW" "EXEC=$1" 2>&1 || true
}

write_ini() {
  cp /etc/virtuoso-opensource-7/virtuoso.ini "$INI"
  local set="inifile +inifile $INI"
  local key
  for key in DatabaseFile:virtuoso.db ErrorLogFile:virtuoso.log LockFile:virtuoso.lck \
             TransactionFile:virtuoso.trx xa_persistent_file:virtuoso.pxa; do
    $set +section Database +key "${key%%:*}" +value "$VT_DIR/db/${key#*:}"
  done
  $set +section TempDatabase +key DatabaseFile +value "$VT_DIR/db/virtuoso-temp.db"
  $set +section TempDatabase +key TransactionFile +value "$VT_DIR/db/virtuoso-temp.trx"
  $set +section Parameters +key ServerPort +value "127.0.0.1:$SQL_PORT"      # ISQL: loopback only
  $set +section Parameters +key DirsAllowed +value "$VT_DIR/data"           # ld_dir() only here
  $set +section HTTPServer +key ServerPort +value "127.0.0.1:$HTTP_PORT"    # HTTP: loopback only
  $set +section URIQA +key DefaultHost +value "127.0.0.1:$HTTP_PORT"
  # The stock limits cut results with a 200 (ResultSetMaxRows 10000, MaxQueryExecutionTime 60
  # gives partial "anytime" answers) or refuse cheap queries on bad estimates.
  $set +section SPARQL +key ResultSetMaxRows +value 1000000
  $set +section SPARQL +key MaxQueryCostEstimationTime +value 0
  $set +section SPARQL +key MaxQueryExecutionTime +value 0
  # Small buffers: the test data is tiny and CI has 2 cores shared with everything else.
  $set +section Parameters +key NumberOfBuffers +value 10000
  $set +section Parameters +key MaxDirtyBuffers +value 6000
}

start() {
  install_pkg
  mkdir -p "$VT_DIR/db" "$VT_DIR/data"
  chmod 700 "$VT_DIR"
  if [ -f "$SECRETS" ]; then
    # shellcheck disable=SC1090
    . "$SECRETS"
  else
    HTTP_PORT=${VT_HTTP_PORT:-18890}
    SQL_PORT=${VT_SQL_PORT:-11111}
    port_free "$HTTP_PORT" || HTTP_PORT=$(free_port)
    port_free "$SQL_PORT" || SQL_PORT=$(free_port)
    DBA_PW=$(random_pw)
    WRITER_PW=$(random_pw)
    (umask 077; printf 'HTTP_PORT=%s\nSQL_PORT=%s\nDBA_PW=%s\nWRITER_PW=%s\n' \
      "$HTTP_PORT" "$SQL_PORT" "$DBA_PW" "$WRITER_PW" > "$SECRETS")
  fi
  [ -f "$INI" ] || write_ini
  if [ ! -f "$VT_DIR/db/virtuoso.db" ]; then
    # Create the database and set the dba and dav passwords before the server ever listens
    # for clients; this run exits by itself.
    virtuoso-t +configfile "$INI" +foreground +pwdold dba +pwddba "$DBA_PW" +pwddav "$DBA_PW" \
      > "$VT_DIR/init.log" 2>&1 || { tail -20 "$VT_DIR/init.log" >&2; die "database init failed"; }
    grep -q "The DBA password is changed" "$VT_DIR/init.log" \
      || { tail -20 "$VT_DIR/init.log" >&2; die "the dba password was not set; refusing to start"; }
  fi
  if running; then
    log "already running (pid $(cat "$PIDFILE"))"
  else
    nohup virtuoso-t +configfile "$INI" +foreground > "$VT_DIR/stdout.log" 2>&1 &
    echo $! > "$PIDFILE"
  fi
  local t0=$SECONDS
  until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$HTTP_PORT/sparql?query=ASK%7B%7D" 2>/dev/null; do
    running || { tail -20 "$VT_DIR/db/virtuoso.log" >&2 || true; die "virtuoso exited during start"; }
    [ $((SECONDS - t0)) -gt 120 ] && die "no HTTP answer on 127.0.0.1:$HTTP_PORT after 120 s"
    sleep 0.2
  done
  local out
  out=$(isql "select 1;")
  case "$out" in *"1 Rows"*) ;; *) echo "$out" | grep -i error >&2; die "cannot log in as dba with the generated password";; esac
  out=$(isql-vt "127.0.0.1:$SQL_PORT" dba dba "EXEC=select 1;" 2>&1 || true)
  case "$out" in *"Bad login"*) ;; *) die "dba/dba still logs in: refusing to go on";; esac
  # The app's account: SPARQL_UPDATE (digest auth on /sparql-auth and the GSP -auth URL).
  out=$(isql "DB.DBA.USER_CREATE('$WRITER', '$WRITER_PW');")
  case "$out" in *rror*) case "$out" in *"already exists"*) ;; *) echo "$out" >&2; die "cannot create $WRITER";; esac;; esac
  out=$(isql "GRANT SPARQL_UPDATE TO \"$WRITER\";")
  case "$out" in *rror*) case "$out" in *"already have role"*) ;; *) echo "$out" >&2; die "cannot grant SPARQL_UPDATE";; esac;; esac
  (umask 077; cat > "$ENVFILE" <<EOF
SASCI_KG_BACKEND=remote
SASCI_KG_ENGINE=virtuoso
SASCI_KG_QUERY_URL=http://127.0.0.1:$HTTP_PORT/sparql
SASCI_KG_UPDATE_URL=http://127.0.0.1:$HTTP_PORT/sparql-auth
SASCI_KG_GSP_URL=http://127.0.0.1:$HTTP_PORT/sparql-graph-crud-auth
SASCI_KG_AUTH=digest
SASCI_KG_REMOTE_ROW_CAP=1000000
SASCI_KG_USER=$WRITER
SASCI_KG_PASSWORD=$WRITER_PW
EOF
)
  log "up (pid $(cat "$PIDFILE")) on 127.0.0.1:$HTTP_PORT in $((SECONDS - t0)) s; settings in $ENVFILE"
}

stop() {
  if ! [ -f "$PIDFILE" ]; then log "not running"; return 0; fi
  local pid
  pid=$(cat "$PIDFILE")
  # shellcheck disable=SC1090
  [ -f "$SECRETS" ] && . "$SECRETS"
  if running; then
    isql "shutdown;" >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true   # checkpoint + exit
    for _ in $(seq 1 150); do running || break; sleep 0.1; done
    if running; then log "no clean exit; TERM"; kill -TERM "$pid" 2>/dev/null || true; sleep 3; fi
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
