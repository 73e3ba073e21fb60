#!/usr/bin/env bash
# Throwaway PostgreSQL + S3 (SeaweedFS `weed mini`) for quackfs' tests and demos.
#
#   scripts/services.sh up     [DIR]          start both (on free loopback ports), wait until they answer,
#                                             write DIR/env; if already up, just print DIR/env
#   scripts/services.sh down   [DIR] [--purge]  stop both; --purge also deletes DIR
#   scripts/services.sh env    [DIR]          print DIR/env (source it: `. DIR/env`)
#   scripts/services.sh status [DIR]          exit 0 when both are up and answering, 3 otherwise
#
# DIR defaults to $QUACKFS_SERVICES_DIR, else /tmp/quackfs-services. Layout: DIR/pg (data dir),
# DIR/run (PostgreSQL socket dir), DIR/s3 (SeaweedFS data), DIR/*.log, DIR/ports, DIR/env.
# PostgreSQL: database and user `quackfs` (password `quackfs`, trust auth on loopback).
# S3: bucket `quackfs`, credentials quackfs / quackfs-secret. Both are tuned for speed, not
# durability (fsync=off): never keep data you care about here. QUACKFS_SERVICES_DURABLE=1 at
# the first `up` of DIR makes PostgreSQL durable instead (fsync, synchronous_commit and
# full_page_writes on, as a production server runs): benchmarks of commit latency use it.
# Ports are picked free at random (11000-21999); one taken by someone else before the server
# binds it is picked again, up to QUACKFS_SERVICES_PORT_TRIES (4) starts.
set -euo pipefail

SELF=$(realpath "$0")
usage() { sed -n '2,18p' "$SELF" | sed 's/^# \{0,1\}//'; }

CMD=${1:-}
[ $# -gt 0 ] && shift
PURGE=0
DIR=
for arg in "$@"; do
    case "$arg" in
        --purge) PURGE=1 ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "services: unknown option $arg" >&2; exit 2 ;;
        *) DIR=$arg ;;
    esac
done
DIR=${DIR:-${QUACKFS_SERVICES_DIR:-/tmp/quackfs-services}}
DIR=$(realpath -m "$DIR")
[ "$CMD" != up ] || mkdir -p "$DIR"
cd /   # the postgres user may not be allowed into the caller's cwd

PG_USER=quackfs PG_PASSWORD=quackfs PG_DB=quackfs
S3_BUCKET=quackfs S3_KEY=quackfs S3_SECRET=quackfs-secret S3_REGION=us-east-1
PY=${PYTHON:-python3}
WAIT_SECS=${QUACKFS_SERVICES_WAIT:-60}

log() { echo "services: $*" >&2; }
die() { log "error: $*"; exit 1; }
tail_log() { log "--- last lines of $1 ---"; tail -n 30 "$1" >&2 2>/dev/null || true; }

# --- PostgreSQL helpers -------------------------------------------------------------
PG_BIN=${PG_BIN:-$(find /usr/lib/postgresql/*/bin -maxdepth 0 -type d 2>/dev/null | sort -V | tail -n 1)}
[ -x "${PG_BIN:-}/pg_ctl" ] || PG_BIN=$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")
PGDATA=$DIR/pg
PGSOCK=$DIR/run

# PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
pg_running() { [ -f "$PGDATA/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" status -D "$PGDATA" >/dev/null 2>&1; }
pg_pid() { head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null || true; }
# Port of the running server (line 4 of postmaster.pid).
pg_live_port() { sed -n 4p "$PGDATA/postmaster.pid" 2>/dev/null || true; }
psql_admin() { as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$PG_PORT" -U postgres -d postgres; }

# --- SeaweedFS helpers ---------------------------------------------------------------
WEED_PIDFILE=$DIR/weed.pid
weed_pid() { cat "$WEED_PIDFILE" 2>/dev/null || true; }
weed_running() {
    local pid
    pid=$(weed_pid)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q weed
}

# Signed (SigV4) HEAD of the bucket, then a PUT and a DELETE of a probe object: prints the HTTP
# statuses (0 = no answer); exits 0 when all succeed. Checks at once that S3 answers, that the
# bucket exists, that the credentials work and that it takes writes (after a restart SeaweedFS
# answers HEAD before its volume server takes writes).
s3_head_bucket() {
    AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET "$PY" - "http://127.0.0.1:$S3_PORT" "$S3_BUCKET" "$S3_REGION" <<'EOF'
import datetime, hashlib, hmac, os, sys, urllib.error, urllib.request
endpoint, bucket, region = sys.argv[1], sys.argv[2], sys.argv[3]
ak, sk = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
host = endpoint.split("://", 1)[1]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy

def call(method, path, body=b""):
    amz = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    digest = hashlib.sha256(body).hexdigest()
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = "\n".join([method, path, "", "host:" + host, "x-amz-content-sha256:" + digest,
                           "x-amz-date:" + amz, "", signed, digest])
    scope = f"{amz[:8]}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + sk).encode()
    for part in (amz[:8], region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(endpoint + path, data=body if method == "PUT" else None,
        method=method, headers={"x-amz-date": amz, "x-amz-content-sha256": digest,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={ak}/{scope}, SignedHeaders={signed}, Signature={sig}"})
    try:
        return opener.open(req, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0

probe = f"/{bucket}/.services-probe-{os.getpid()}"
codes = [call("HEAD", "/" + bucket)]
if codes[0] == 200:
    codes.append(call("PUT", probe, b"ready"))
    if codes[1] == 200:
        codes.append(call("DELETE", probe))
print(" ".join(map(str, codes)))
sys.exit(0 if codes[0] == 200 and codes[1:2] == [200] and codes[2:3] in ([200], [204]) else 1)
EOF
}

# --- Ports -----------------------------------------------------------------------------
# Each weed component listens on PORT and PORT+10000 (gRPC). The gRPC ports could be set
# apart, but weed mini's built-in worker dials the admin server at admin.port+10000 whatever
# -admin.port.grpc says, so every gRPC port is kept at the conventional PORT+10000.
WEED_PORT_VARS=(S3_PORT MASTER_PORT VOLUME_PORT FILER_PORT ADMIN_PORT METRICS_PORT)
GRPC_OFFSET=10000

# port_tool pick N [EXCLUDE...]: N ports P (11000-21999) with P and P+10000 free on 127.0.0.1,
#                                all distinct and not excluded (below the ephemeral range).
# port_tool free P...:           exit 0 if each P and P+10000 can be bound right now.
port_tool() {
    "$PY" - "$GRPC_OFFSET" "$@" <<'EOF'
import random, socket, sys
offset, mode, args = int(sys.argv[1]), sys.argv[2], [int(a) for a in sys.argv[3:]]
def bindable(host, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is fine
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()
def free(port):
    # weed mini refuses a port it cannot bind on all interfaces as well as on 127.0.0.1.
    return bindable("127.0.0.1", port) and bindable("", port)
if mode == "free":
    sys.exit(0 if args and all(free(p) and free(p + offset) for p in args) else 1)
n, taken, found = args[0], set(args[1:]), []
for p in random.sample(range(11000, 22000), 3000):
    if {p, p + offset} & taken or not (free(p) and free(p + offset)):
        continue
    found.append(p)
    taken |= {p, p + offset}
    if len(found) == n:
        print(" ".join(map(str, found)))
        sys.exit(0)
sys.exit("services: no free ports found")
EOF
}
# A port picked free can be bound by someone else before our server binds it (another
# instance picking at the same moment: the test suite starts several at once). start_pg and
# wait_weed then add the server's name to PORT_CLASH instead of failing, and cmd_up picks
# other ports for it and starts it again, up to PORT_TRIES times.
PORT_TRIES=${QUACKFS_SERVICES_PORT_TRIES:-4}
case "$PORT_TRIES" in
    '' | *[!0-9]* | 0) die "QUACKFS_SERVICES_PORT_TRIES must be a whole number of 1 or more, not '$PORT_TRIES'" ;;
esac
PORT_CLASH=
# port_clash LOG [FROM_BYTE]: what LOG says from FROM_BYTE (default 0) on, its last lines,
# tell of a listening port that was taken.
port_clash() {
    tail -c +$((${2:-0} + 1)) "$1" 2>/dev/null | tail -n 30 |
        grep -q -i -E "port allocation failed|address already in use|could not bind"
}
# The weed ports and their gRPC twins (arguments for `port_tool pick N EXCLUDE...`).
weed_ports() { local v; for v in "${WEED_PORT_VARS[@]}"; do echo "${!v} $((${!v} + GRPC_OFFSET))"; done; }
pick_weed_ports() {
    local fresh=() v
    read -r -a fresh <<<"$(port_tool pick ${#WEED_PORT_VARS[@]} "$PG_PORT" $((PG_PORT + GRPC_OFFSET)))"
    for v in "${WEED_PORT_VARS[@]}"; do
        printf -v "$v" '%s' "${fresh[0]}"
        fresh=("${fresh[@]:1}")
    done
}
save_ports() {
    {
        echo "PG_PORT=$PG_PORT"
        for v in "${WEED_PORT_VARS[@]}"; do echo "$v=${!v}"; done
    } >"$DIR/ports"
}

# --- env file --------------------------------------------------------------------------
write_env() {
    local f=$DIR/env
    {
        echo "# quackfs test services, written by scripts/services.sh up on $(date -u +%FT%TZ)"
        printf 'export %s=%q\n' \
            QUACKFS_TEST_PG_URL "postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB" \
            QUACKFS_TEST_S3_BUCKET "$S3_BUCKET" \
            AWS_ENDPOINT_URL "http://127.0.0.1:$S3_PORT" \
            AWS_ACCESS_KEY_ID "$S3_KEY" \
            AWS_SECRET_ACCESS_KEY "$S3_SECRET" \
            AWS_REGION "$S3_REGION" \
            AWS_EC2_METADATA_DISABLED true \
            QUACKFS_SERVICES_DIR "$DIR" \
            QUACKFS_SERVICES_PG_PORT "$PG_PORT" \
            QUACKFS_SERVICES_PG_PID "$(pg_pid)" \
            QUACKFS_SERVICES_PG_SOCKET_DIR "$PGSOCK" \
            QUACKFS_SERVICES_S3_PORT "$S3_PORT" \
            QUACKFS_SERVICES_S3_METRICS_URL "http://127.0.0.1:$METRICS_PORT/metrics" \
            QUACKFS_SERVICES_S3_PID "$(weed_pid)"
    } >"$f.tmp"
    mv "$f.tmp" "$f"
}

# --- up ----------------------------------------------------------------------------------
start_pg() {
    [ -x "$PG_BIN/initdb" ] || die "PostgreSQL server binaries not found (set PG_BIN, or run scripts/install-deps.sh)"
    [ ${#PGSOCK} -lt 90 ] || die "DIR is too long for a unix socket path: $DIR"
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "no 'postgres' user to run PostgreSQL as (install Debian's postgresql package)"
        chmod a+rx "$DIR"
        runuser -u postgres -- test -x "$DIR" || die "the postgres user cannot enter $DIR (choose a DIR under /tmp)"
    fi
    mkdir -p "$PGSOCK"
    touch "$DIR/pg.log"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$PGSOCK" "$DIR/pg.log"; fi

    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        log "initdb $PGDATA"
        rm -rf "$PGDATA"
        mkdir -p "$PGDATA"
        if [ "$(id -u)" -eq 0 ]; then chown postgres: "$PGDATA"; fi
        # trust: local socket and 127.0.0.1/::1 accept any user without a password.
        as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --no-locale --no-sync \
            >"$DIR/initdb.log" 2>&1 || { tail_log "$DIR/initdb.log"; die "initdb failed"; }
        # Throwaway test server: fast and loose. Port and socket dir are given at start.
        cat >>"$PGDATA/postgresql.conf" <<'EOF'

# --- scripts/services.sh (throwaway test server) ---
listen_addresses = '127.0.0.1'
max_connections = 300
EOF
        if [ "${QUACKFS_SERVICES_DURABLE:-0}" = 1 ]; then
            printf 'fsync = on\nsynchronous_commit = on\nfull_page_writes = on\n' >>"$PGDATA/postgresql.conf"
        else
            printf 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n' >>"$PGDATA/postgresql.conf"
        fi
    fi

    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    local log_from
    log_from=$(stat -c %s "$DIR/pg.log")
    if ! as_pg "$PG_BIN/pg_ctl" start -D "$PGDATA" -l "$DIR/pg.log" -w -t "$WAIT_SECS" \
        -o "-p $PG_PORT -k $PGSOCK" >/dev/null; then
        tail_log "$DIR/pg.log"
        if port_clash "$DIR/pg.log" "$log_from"; then PORT_CLASH+=" PostgreSQL"; return 0; fi
        die "PostgreSQL did not start"
    fi
    as_pg "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || { tail_log "$DIR/pg.log"; die "PostgreSQL does not answer on 127.0.0.1:$PG_PORT"; }

    # User and database (idempotent). CREATEDB lets tests make databases of their own.
    psql_admin <<EOF
SELECT 'CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD ''$PG_PASSWORD'''
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER') \gexec
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$PG_DB') \gexec
EOF
}

start_weed() {
    command -v weed >/dev/null || die "weed not found (run scripts/install-deps.sh)"
    mkdir -p "$DIR/s3"
    # Unix sockets weed would otherwise leave in /tmp, named by port (only if the path fits).
    local socks=()
    if [ ${#DIR} -lt 80 ]; then
        socks=(-filer.localSocket="$DIR/weed-filer.sock" -s3.localSocket="$DIR/weed-s3.sock")
        rm -f "$DIR/weed-filer.sock" "$DIR/weed-s3.sock"
    fi
    # gRPC sockets a SIGKILLed weed left in /tmp for these ports (the ports are free: nobody uses them).
    local v
    for v in "${WEED_PORT_VARS[@]}"; do rm -f /tmp/seaweedfs-*-grpc-$((${!v} + GRPC_OFFSET)).sock; done
    log "starting SeaweedFS S3 on 127.0.0.1:$S3_PORT"
    # Every listening port is set explicitly so several instances can run side by side;
    # WebDAV, the admin UI, Iceberg and Lance endpoints and telemetry are off.
    # The admin server still listens (with the UI off), hence its ports too. Its own log files
    # go to $DIR (weed writes them to /tmp otherwise, and they would outlive the services).
    AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET nohup weed -logdir="$DIR" mini \
        -dir="$DIR/s3" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -bucket="$S3_BUCKET" \
        -s3.port="$S3_PORT" -s3.port.grpc=$((S3_PORT + GRPC_OFFSET)) \
        -master.port="$MASTER_PORT" -master.port.grpc=$((MASTER_PORT + GRPC_OFFSET)) \
        -volume.port="$VOLUME_PORT" -volume.port.grpc=$((VOLUME_PORT + GRPC_OFFSET)) \
        -filer.port="$FILER_PORT" -filer.port.grpc=$((FILER_PORT + GRPC_OFFSET)) \
        -admin.ui=false -admin.port="$ADMIN_PORT" -admin.port.grpc=$((ADMIN_PORT + GRPC_OFFSET)) \
        -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
        -master.telemetry=false \
        -metricsIp=127.0.0.1 -metricsPort="$METRICS_PORT" \
        "${socks[@]}" \
        </dev/null >"$DIR/weed.log" 2>&1 &
    echo $! >"$WEED_PIDFILE"
}

wait_weed() {
    local deadline=$((SECONDS + WAIT_SECS)) code=0 pid
    pid=$(weed_pid)
    while true; do
        # Liveness by pid alone: right after the fork the child may not have exec'd `weed` yet
        # (its cmdline is still this script's), so weed_running's cmdline check would misfire.
        if ! kill -0 "$pid" 2>/dev/null; then
            tail_log "$DIR/weed.log"
            if port_clash "$DIR/weed.log"; then PORT_CLASH+=" SeaweedFS"; rm -f "$WEED_PIDFILE"; return 0; fi
            die "SeaweedFS exited during start"
        fi
        code=$(s3_head_bucket) && return 0
        if [ $SECONDS -ge $deadline ]; then
            tail_log "$DIR/weed.log"
            die "S3 not ready after ${WAIT_SECS}s (HEAD /$S3_BUCKET, PUT and DELETE of a probe answered HTTP $code)"
        fi
        sleep 0.5
    done
}

cmd_up() {
    command -v "$PY" >/dev/null || die "$PY not found"
    PG_PORT=
    for v in "${WEED_PORT_VARS[@]}"; do printf -v "$v" '%s' ''; done
    # Reuse the ports of a previous run when still free, so a restart keeps its URLs.
    if [ -f "$DIR/ports" ]; then
        # shellcheck source=/dev/null
        . "$DIR/ports"
    fi

    local pg_up=0 weed_up=0
    if pg_running; then pg_up=1; PG_PORT=$(pg_live_port); fi
    if weed_running; then weed_up=1; fi
    if [ $pg_up = 1 ] && [ $weed_up = 1 ] && s3_head_bucket >/dev/null && [ -f "$DIR/env" ]; then
        log "already up ($DIR)"
        cat "$DIR/env"
        return 0
    fi

    if [ $pg_up = 0 ] && { [ -z "$PG_PORT" ] || ! port_tool free "$PG_PORT"; }; then
        PG_PORT=$(port_tool pick 1)
    fi
    if [ $weed_up = 0 ]; then
        local current=()
        for v in "${WEED_PORT_VARS[@]}"; do current+=("${!v}"); done
        if [ -z "$S3_PORT" ] || ! port_tool free "${current[@]}"; then pick_weed_ports; fi
    fi
    save_ports

    # If this call fails half way, stop what it started (and only that).
    STARTED_PG=0 STARTED_WEED=0
    trap 'rc=$?; if [ $rc -ne 0 ]; then log "up failed: stopping what it started";
          if [ $STARTED_WEED = 1 ]; then stop_weed; fi; if [ $STARTED_PG = 1 ]; then stop_pg; fi; fi' EXIT
    local try=1
    while true; do
        PORT_CLASH=
        if [ $weed_up = 0 ]; then STARTED_WEED=1; start_weed; fi   # in the background while PostgreSQL starts
        if [ $pg_up = 0 ]; then STARTED_PG=1; start_pg; fi
        wait_weed
        [ -n "$PORT_CLASH" ] || break
        [ $try -lt "$PORT_TRIES" ] || die "a port of${PORT_CLASH} was taken before it could be bound, $try times"
        log "a port of${PORT_CLASH} was taken before it could be bound: picking others (try $((try + 1)) of $PORT_TRIES)"
        # What did start stays up; what clashed gets ports apart from everything in use here.
        case "$PORT_CLASH" in *SeaweedFS*) ;; *) weed_up=1 ;; esac
        case "$PORT_CLASH" in *PostgreSQL*) ;; *) pg_up=1 ;; esac
        if [ $pg_up = 0 ]; then
            # shellcheck disable=SC2046  # one argument per port
            PG_PORT=$(port_tool pick 1 $(weed_ports))
        fi
        if [ $weed_up = 0 ]; then pick_weed_ports; fi
        save_ports
        try=$((try + 1))
    done
    trap - EXIT
    write_env
    log "up: PostgreSQL 127.0.0.1:$PG_PORT, S3 http://127.0.0.1:$S3_PORT (bucket $S3_BUCKET); env in $DIR/env"
    cat "$DIR/env"
}

# --- down / status / env -------------------------------------------------------------------
stop_pg() {
    if pg_running; then
        log "stopping PostgreSQL"
        as_pg "$PG_BIN/pg_ctl" stop -D "$PGDATA" -m fast -w -t 60 >/dev/null || log "warning: pg_ctl stop failed"
    fi
}

stop_weed() {
    if weed_running; then
        local pid
        pid=$(weed_pid)
        log "stopping SeaweedFS (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "SeaweedFS still running after 10s: SIGKILL"
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$WEED_PIDFILE" "$DIR/weed-filer.sock" "$DIR/weed-s3.sock"
    # gRPC sockets weed keeps in /tmp by port: remove any it left behind.
    if [ -f "$DIR/ports" ]; then
        # shellcheck source=/dev/null
        . "$DIR/ports"
        local v
        for v in "${WEED_PORT_VARS[@]}"; do
            if [ -n "${!v:-}" ]; then rm -f /tmp/seaweedfs-*-grpc-$((${!v} + GRPC_OFFSET)).sock; fi
        done
    fi
}

cmd_down() {
    stop_pg
    stop_weed
    if [ $PURGE = 1 ]; then
        log "removing $DIR"
        rm -rf "$DIR"
    fi
    log "down"
}

cmd_status() {
    local rc=0 pg_port
    if pg_running; then
        pg_port=$(pg_live_port)
        if as_pg "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; then
            echo "postgres: up, 127.0.0.1:$pg_port, pid $(pg_pid)"
        else
            echo "postgres: running (pid $(pg_pid)) but not answering on 127.0.0.1:$pg_port"; rc=3
        fi
    else
        echo "postgres: down"; rc=3
    fi
    if weed_running; then
        # shellcheck source=/dev/null
        . "$DIR/ports"
        local code
        if code=$(s3_head_bucket); then
            echo "s3: up, http://127.0.0.1:$S3_PORT, bucket $S3_BUCKET, pid $(weed_pid)"
        else
            echo "s3: running (pid $(weed_pid)) but HEAD /$S3_BUCKET answers HTTP $code"; rc=3
        fi
    else
        echo "s3: down"; rc=3
    fi
    return $rc
}

cmd_env() {
    [ -f "$DIR/env" ] || die "no $DIR/env: run scripts/services.sh up first"
    cat "$DIR/env"
}

case "$CMD" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
