# shellcheck shell=bash
# Shared helpers for the quackfs benchmarks (sourced by bench/*.sh, not run directly).
#
# Conventions: every benchmark works in a fresh temp directory under $BENCH_DIR (local disk, never
# the user's data dir), prints a human table on stdout and appends one JSON line per run to
# $BENCH_DIR/results.jsonl. Progress notes go to stderr.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/quackfs-bench}
QUACKFS=${QUACKFS:-target/release/quackfs}
PYTHON=${PYTHON:-python3}
# Measurements per configuration; the median is reported.
BENCH_REPS=${BENCH_REPS:-3}

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${BENCH_NAME:-bench}" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Resolves $QUACKFS to an absolute path (relative paths are relative to the repository root).
resolve_quackfs() {
    case "$QUACKFS" in
        /*) ;;
        */*) QUACKFS="$BENCH_ROOT/$QUACKFS" ;;
        *) QUACKFS=$(command -v "$QUACKFS") || die "quackfs binary '$QUACKFS' not found" ;;
    esac
    [ -x "$QUACKFS" ] || die "$QUACKFS is not built: run 'cargo build --release' (or bash bench/run.sh)"
}

# Creates a fresh work directory under $BENCH_DIR, removed on exit (also on error or Ctrl-C),
# and points quackfs at it: data dir, config dir and no inherited catalog/store/repo settings.
# Sets WORK.
setup_workdir() {
    mkdir -p "$BENCH_DIR"
    WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
    trap cleanup_workdir EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    mkdir -p "$WORK/config"
    export XDG_CONFIG_HOME="$WORK/config"
    unset QUACKFS_CATALOG QUACKFS_STORE QUACKFS_REPO QUACKFS_HOME
    export QUACKFS_AUTHOR=bench@localhost
}

cleanup_workdir() {
    if [ -n "${WORK:-}" ] && [ -d "$WORK" ] && [ -z "${BENCH_KEEP:-}" ]; then
        rm -rf "$WORK"
    elif [ -n "${BENCH_KEEP:-}" ]; then
        log "kept $WORK (BENCH_KEEP is set)"
    fi
}

# Filesystem type of a path (ext4, xfs, tmpfs, …).
fs_type() {
    findmnt -no FSTYPE -T "$1" 2>/dev/null || df -T "$1" | awk 'NR == 2 {print $2}'
}

# Whether the page cache can be dropped here (root with a writable /proc/sys/vm).
CAN_DROP_CACHES=
probe_drop_caches() {
    if sync && { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
        CAN_DROP_CACHES=1
    fi
}

# Writes back dirty pages; in cold mode also empties the page cache so the next command reads
# from disk. Called before every timed command, for both sides of a comparison alike.
prepare_cache() { # MODE: warm | cold
    sync
    if [ "$1" = cold ]; then
        echo 3 >/proc/sys/vm/drop_caches
    fi
}

# Runs a command, timed; stdout/stderr go to $WORK/last.out / last.err. Sets T_REAL, T_USER,
# T_SYS (seconds). Fails loudly with the command's stderr if it fails.
timed() {
    local tf="$WORK/last.time" TIMEFORMAT='%3R %3U %3S' rc=0
    { time "$@" >"$WORK/last.out" 2>"$WORK/last.err"; } 2>"$tf" || rc=$?
    if [ "$rc" -ne 0 ]; then
        log "command failed (exit $rc): $*"
        sed 's/^/    /' "$WORK/last.err" >&2
        return "$rc"
    fi
    # shellcheck disable=SC2034 # read by the benchmarks
    read -r T_REAL T_USER T_SYS <"$tf"
}

# Median of the numbers given as arguments.
median() {
    printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# a / b with 3 decimals ("nan" if b is zero).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "nan"; else printf "%.3f\n", a / b }'; }

# PASS if value <= target, else MISS.
verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v != "nan" && v + 0 <= t + 0) ? "PASS" : "MISS" }'; }

# Bytes as MiB with 1 decimal.
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB\n", b / 1048576 }'; }

# MB/s for BYTES in SECONDS.
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { if (s + 0 == 0) print "-"; else printf "%.0f MB/s\n", b / s / 1e6 }'; }

# Sum of the sizes of the regular files under a directory (apparent sizes, bytes).
dir_bytes() {
    if [ -d "$1" ]; then
        find "$1" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'
    else
        echo 0
    fi
}

# Machine description, one "key: value" per line.
machine_info() {
    local cpu
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
    echo "host:        $(hostname) ($(uname -sr))"
    echo "cpu:         $(nproc) cores${cpu:+, $cpu}"
    echo "memory:      $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "load:        $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min; other work on the machine skews the times)"
    echo "bench dir:   $BENCH_DIR ($(fs_type "$BENCH_DIR"), $(df -h --output=avail "$BENCH_DIR" | tail -n 1 | tr -d ' ') free)"
    echo "quackfs:     $QUACKFS ($("$QUACKFS" --version 2>/dev/null || echo '?'), git $(git_rev))"
    echo "page cache:  $(if [ -n "$CAN_DROP_CACHES" ]; then echo 'can be dropped (cold runs measured)'; else echo 'cannot be dropped (warm runs only)'; fi)"
}

git_rev() {
    local rev
    rev=$(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null) || {
        echo unknown
        return
    }
    if [ -n "$(git -C "$BENCH_ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
        rev="$rev+dirty"
    fi
    echo "$rev"
}

# JSON string literal.
json_str() { "$PYTHON" -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }

# Appends one JSON object (built from KEY=VALUE arguments; values that look like numbers stay
# numbers, "true"/"false" stay booleans, the rest become strings) to $BENCH_DIR/results.jsonl.
append_result() {
    "$PYTHON" - "$BENCH_DIR/results.jsonl" "$@" <<'PY'
import json, re, sys
out, pairs = sys.argv[1], sys.argv[2:]
obj = {}
for p in pairs:
    k, _, v = p.partition("=")
    if re.fullmatch(r"-?\d+", v):
        obj[k] = int(v)
    elif re.fullmatch(r"-?\d+\.\d*(e-?\d+)?", v):
        obj[k] = float(v)
    elif v in ("true", "false"):
        obj[k] = v == "true"
    else:
        obj[k] = v
with open(out, "a") as f:
    f.write(json.dumps(obj, sort_keys=False) + "\n")
PY
}

# --- Mounts (duckdb_workload.sh, merge_gc.sh) ------------------------------------------------
# Every mount made with bench_mount is remembered ("DIR|PID|QUACKFS_HOME") so that the exit trap
# unmounts it before the work directory is removed, even on error or Ctrl-C.
BENCH_MOUNTS=()

# Replaces setup_workdir's exit trap: unmount everything still mounted, then remove $WORK.
trap_mounts() {
    trap 'cleanup_mounts; cleanup_workdir' EXIT
}

# Mounts REV at DIR with `quackfs mount --daemon` (further arguments are passed on), timed like
# `timed` (T_REAL: until the mount is ready). Sets MOUNT_PID.
bench_mount() { # REV DIR [ARGS…]
    local rev=$1 dir=$2 key
    shift 2
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    BENCH_MOUNTS+=("$dir||${QUACKFS_HOME:-}")
    timed "$QUACKFS" mount "$rev" "$dir" --daemon "$@"
    # The mount records its pid in DATA_DIR/run/mount<DIR, non-alphanumerics as _>.pid.
    key=${dir//[^A-Za-z0-9]/_}
    MOUNT_PID=$(cat "$QUACKFS_HOME/run/mount$key.pid" 2>/dev/null || true)
    BENCH_MOUNTS[${#BENCH_MOUNTS[@]} - 1]="$dir|$MOUNT_PID|${QUACKFS_HOME:-}"
}

# `quackfs umount DIR` (flushes and waits for the mount process), timed like `timed`.
bench_umount() { # DIR
    local dir i
    dir=$(cd "$1" && pwd -P)
    timed "$QUACKFS" umount "$dir"
    for i in "${!BENCH_MOUNTS[@]}"; do
        if [ "${BENCH_MOUNTS[$i]%%|*}" = "$dir" ]; then unset "BENCH_MOUNTS[$i]"; fi
    done
}

# Unmounts whatever bench_mount mounted and is still mounted: `quackfs umount`, else a lazy
# unmount; then ends the mount process (by its recorded pid) if it is still running.
cleanup_mounts() {
    local m dir pid home n
    for m in "${BENCH_MOUNTS[@]}"; do
        IFS='|' read -r dir pid home <<<"$m"
        if mountpoint -q "$dir" 2>/dev/null; then
            log "cleanup: unmounting $dir"
            QUACKFS_HOME=$home timeout 120 "$QUACKFS" umount "$dir" >/dev/null 2>&1 ||
                umount -l "$dir" 2>/dev/null || umount -l -f "$dir" 2>/dev/null || true
        fi
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
            tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- " $dir"; then
            n=0
            while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 100 ]; do
                sleep 0.1
                n=$((n + 1))
            done
            if kill -0 "$pid" 2>/dev/null; then
                log "cleanup: ending mount process $pid"
                kill "$pid" 2>/dev/null || true
            fi
        fi
        if mountpoint -q "$dir" 2>/dev/null; then
            log "cleanup: $dir is still mounted; keeping $WORK"
            BENCH_KEEP=1
        fi
    done
    BENCH_MOUNTS=()
}

# Drops the page cache if possible (root), after writing dirty pages back; otherwise only syncs.
drop_caches() {
    sync
    if [ -n "$CAN_DROP_CACHES" ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# Median and 99th percentile (nearest rank) of the numbers in a file, one a line: "MEDIAN P99 N".
quantiles() { # FILE
    sort -g "$1" | awk '{a[NR] = $1} END {
        if (NR == 0) { print "nan nan 0"; exit }
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        r = int(0.99 * NR); if (r < 0.99 * NR) r++; if (r < 1) r = 1
        printf "%.6f %.6f %d\n", m, a[r], NR }'
}

# One machine-load line (other work on the machine skews the times).
# CPU time so far, in clock ticks: `cpu_ticks machine` (the whole machine, busy: every state
# but idle and iowait), else the user + system time of the processes named (PIDs).
cpu_ticks() { # machine | PID…
    if [ "$1" = machine ]; then
        awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
        return
    fi
    local t=0 p
    for p in "$@"; do
        # (Fields after the command name, which is in parentheses: utime is the 12th, stime the 13th.)
        [ -r "/proc/$p/stat" ] && t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$t"
}
# Seconds from a difference of clock ticks.
ticks_s() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f\n", t / hz }'; }

load_now() { echo "$(cut -d' ' -f1-3 /proc/loadavg) (load 1/5/15 min at $(date +%H:%M:%S))"; }

# Prints the path of a cached test database in $BENCH_DIR/cache, generating it first if missing:
# TPC-H (tpch-sf<SF>.duckdb, `CALL dbgen(sf=SF); CHECKPOINT` with the Python duckdb module and
# its tpch extension) or, if that is unavailable or DATA=synthetic, a lineitem-like table of about
# SYNTH_MB MB (synthetic-<SYNTH_MB>mb.duckdb). Same names as import_export.sh, so the cache is shared.
bench_database() { # DATA SF SYNTH_MB
    "$PYTHON" - "$BENCH_DIR/cache" "$@" <<'PY'
import os, sys, time
import duckdb
cache, data, sf, synth_mb = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
os.makedirs(cache, exist_ok=True)
tpch = False
if data == "tpch":
    try:
        import duckdb_ext
        duckdb_ext.init(duckdb.connect()).load_extension("tpch")
        tpch = True
    except Exception as e:
        print(f"tpch extension unavailable ({e}); using synthetic tables", file=sys.stderr)
name = f"tpch-sf{sf}.duckdb" if tpch else f"synthetic-{synth_mb}mb.duckdb"
path = os.path.join(cache, name)
if not os.path.exists(path):
    tmp = path + ".tmp"
    for p in (tmp, tmp + ".wal"):
        if os.path.exists(p):
            os.remove(p)
    t = time.time()
    con = duckdb.connect(tmp)
    if tpch:
        import duckdb_ext
        duckdb_ext.init(con)
        con.load_extension("tpch")
        con.execute(f"CALL dbgen(sf={sf})")
    else:
        rows = synth_mb * 1_000_000 // 26
        con.execute("SELECT setseed(0.42)")
        con.execute(f"""
            CREATE TABLE lineitem AS SELECT
                range // 4 + 1 AS l_orderkey,
                (range % 4 + 1)::INTEGER AS l_linenumber,
                (random() * 50)::INTEGER AS l_quantity,
                random() * 100000 AS l_extendedprice,
                md5(range::VARCHAR) AS l_comment
            FROM range({rows})""")
    con.execute("CHECKPOINT")
    con.close()
    os.replace(tmp, path)
    print(f"generated {name} in {time.time() - t:.1f} s", file=sys.stderr)
print(path)
PY
}

# Compares two files byte for byte. Returns 0 if identical; otherwise prints one line: how many
# bytes differ, the first and last differing offsets, and how many of them are zero in REF (all of
# them zero in REF means zeros written over older data were lost) — and returns 1.
compare_files() { # REF OTHER
    "$PYTHON" - "$1" "$2" <<'PY'
import sys
ref, other = sys.argv[1], sys.argv[2]
CHUNK = 1 << 20
n = zero = 0
first = last = None
with open(ref, "rb") as a, open(other, "rb") as b:
    off = 0
    while True:
        x, y = a.read(CHUNK), b.read(CHUNK)
        if not x and not y:
            break
        if x != y:
            m = max(len(x), len(y))
            x, y = x.ljust(m, b"\0"), y.ljust(m, b"\0")
            for i in range(m):
                if x[i] != y[i]:
                    n += 1
                    zero += x[i] == 0
                    first = off + i if first is None else first
                    last = off + i
        off += max(len(x), len(y))
if n:
    print(f"{n} bytes differ at offsets {first}..{last}; {zero} of them are zero in the reference")
    sys.exit(1)
PY
}

# --- Throwaway services (PostgreSQL + SeaweedFS, and a delaying proxy for S3) -----------------
# Starts PostgreSQL + SeaweedFS in a new $SVC (`scripts/services.sh up`; PostgreSQL durable if
# DURABLE is 1) and exports their variables. Set the EXIT trap (cleanup_services) first.
start_services() { # DURABLE
    SVC=$(mktemp -d /tmp/qfs-bench-svc.XXXXXX)
    log "starting PostgreSQL + S3 in $SVC (durable PostgreSQL: $1)"
    QUACKFS_SERVICES_DURABLE=$1 bash "$BENCH_ROOT/scripts/services.sh" up "$SVC" >/dev/null 2>"$WORK/services.log" ||
        { cat "$WORK/services.log" >&2; die "scripts/services.sh up failed"; }
    set -a
    # shellcheck source=/dev/null
    . "$SVC/env"
    set +a
}

# A free TCP port on 127.0.0.1.
free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Puts bench/delay_proxy.py in front of the services' S3, adding DELAY_MS per round trip (and
# with RATE_MB_S, at most that many MB/s per connection); sets PROXY_PORT and PROXY_PID
# (cleanup_proxy stops it).
PROXY_PID=
start_delay_proxy() { # DELAY_MS [RATE_MB_S]
    PROXY_PORT=$(free_port)
    "$PYTHON" "$BENCH_ROOT/bench/delay_proxy.py" "$PROXY_PORT" "$QUACKFS_SERVICES_S3_PORT" "$1" "${2:-0}" >"$WORK/proxy.log" 2>&1 &
    PROXY_PID=$!
    for _ in $(seq 100); do grep -q ready "$WORK/proxy.log" 2>/dev/null && break; sleep 0.05; done
    log "S3 through a proxy adding $1 ms per round trip: http://127.0.0.1:$PROXY_PORT"
}
cleanup_proxy() { if [ -n "$PROXY_PID" ]; then kill "$PROXY_PID" 2>/dev/null || true; fi; }

# Stops the PostgreSQL + SeaweedFS that `scripts/services.sh up $SVC` started and deletes $SVC.
# Call it after cleanup_mounts (a mount still running needs its catalog and store to flush).
cleanup_services() {
    if [ -n "${SVC:-}" ] && [ -d "$SVC" ]; then
        log "cleanup: stopping the services in $SVC"
        bash "$BENCH_ROOT/scripts/services.sh" down "$SVC" --purge >/dev/null 2>&1 ||
            log "cleanup: scripts/services.sh down $SVC --purge failed"
    fi
}
