#!/usr/bin/env bash
# Benchmark: one DuckDB workload on local disk vs on a quackfs mount (issue "FUSE mount").
#
#   bash bench/duckdb_workload.sh      (from the repository root; see bench/README.md)
#
# Environment:
#   QUACKFS=target/release/quackfs   binary under test
#   BENCH_DIR=/tmp/quackfs-bench     local-disk work area (results.jsonl appended, run.* temp)
#   BENCH_REPS=5                     runs of the query phase (median reported)
#   BENCH_TXNS=20                    small transactions (each followed by CHECKPOINT)
#   BENCH_SF=1                       TPC-H scale factor
#   BENCH_DATA=tpch|synthetic        force the data set (default: tpch, synthetic if unavailable)
#   BENCH_SYNTH_MB=250               approximate size of the synthetic database
#   BENCH_COLD=0                     1 = drop the page cache before every reopen (both sides)
#   BENCH_STRACE=1                   0 = skip the strace'd extra transaction run (fsync latency)
#   BENCH_KEEP=1                     keep the temp directory for inspection
#   BENCH_BACKEND=embedded|pgs3      where the mount keeps its data: the embedded catalog and local
#                                    objects (default), or PostgreSQL + S3 (SeaweedFS) on 127.0.0.1,
#                                    started for this run with scripts/services.sh and purged after
#   BENCH_PG_DURABLE=1               0 = PostgreSQL with fsync and synchronous_commit off (pgs3)
#
# Issue targets (mount / local disk): whole workload <= 1.15x, the transaction phase <= 1.5x,
# queries <= 1.2x; stored bytes after the run <= 1.05x the logical bytes that survive.
# With BENCH_BACKEND=pgs3 (issue "PostgreSQL + S3"): whole workload <= 1.5x, the transaction
# phase <= 2x, bytes uploaded to S3 during the workload <= 1.1x the bytes DuckDB wrote.
set -euo pipefail

BENCH_NAME=duckdb_workload
QREPS=${BENCH_REPS:-5} # lib.sh's default is 3; the query phase is short and noisy
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_REPS=$QREPS
TXNS=${BENCH_TXNS:-20}
SF=${BENCH_SF:-1}
DATA=${BENCH_DATA:-tpch}
SYNTH_MB=${BENCH_SYNTH_MB:-250}
COLD=${BENCH_COLD:-0}
STRACE=${BENCH_STRACE:-1}
TARGET_TOTAL=1.15
TARGET_TXNS=1.5
TARGET_QUERIES=1.2
TARGET_STORED=1.05
BACKEND=${BENCH_BACKEND:-embedded}
TARGET_UPLOAD=1.1
case "$BACKEND" in
    embedded) ;;
    pgs3)
        TARGET_TOTAL=1.5
        TARGET_TXNS=2
        TARGET_QUERIES=""
        ;;
    *) die "BENCH_BACKEND must be embedded or pgs3, not '$BACKEND'" ;;
esac

resolve_quackfs
setup_workdir
trap_mounts
SVC=
if [ "$BACKEND" = pgs3 ]; then
    # Throwaway PostgreSQL + SeaweedFS, stopped and purged on exit (after the mounts are gone).
    trap 'cleanup_mounts; cleanup_services; cleanup_workdir' EXIT
    start_services "${BENCH_PG_DURABLE:-1}"
    S3_PREFIX=bench-$(date +%s)-$RANDOM
    export QUACKFS_CATALOG=$QUACKFS_TEST_PG_URL
    export QUACKFS_STORE=s3://$QUACKFS_TEST_S3_BUCKET/$S3_PREFIX
    log "catalog $QUACKFS_CATALOG, store $QUACKFS_STORE ($AWS_ENDPOINT_URL)"
fi
probe_drop_caches
if [ "$COLD" = 1 ] && [ -z "$CAN_DROP_CACHES" ]; then
    log "warning: BENCH_COLD=1 but the page cache cannot be dropped: warm runs only"
    COLD=0
fi
if [ "$STRACE" = 1 ] && ! command -v strace >/dev/null; then
    log "warning: strace not found: no fsync latency"
    STRACE=0
fi
T0=$SECONDS
LOAD_START=$(load_now)

# --- Python driver: the same code and SQL on both sides; each phase is one process and prints
# one JSON object whose "s" is the phase's time from connect to close (no interpreter start-up).
DRIVER="$WORK/workload.py"
cat >"$DRIVER" <<'PY'
import json, random, sys, time

import duckdb

QUERIES = [1, 3, 5, 6, 10]  # PRAGMA tpch(n)
# Synthetic stand-ins (same tables and columns the transactions use).
SYNTH_QUERIES = [
    "SELECT l_returnflag, l_linestatus, sum(l_quantity), sum(l_extendedprice), avg(l_discount),"
    " count(*) FROM lineitem WHERE l_shipdate <= DATE '1998-09-02' GROUP BY ALL ORDER BY ALL",
    "SELECT o_orderkey, sum(l_extendedprice * (1 - l_discount)) AS revenue, o_orderdate FROM orders"
    " JOIN lineitem ON l_orderkey = o_orderkey WHERE o_orderdate < DATE '1995-03-15'"
    " GROUP BY ALL ORDER BY revenue DESC LIMIT 10",
    "SELECT o_orderpriority, count(*) FROM orders WHERE o_orderdate >= DATE '1993-07-01'"
    " AND EXISTS (SELECT 1 FROM lineitem WHERE l_orderkey = o_orderkey AND l_quantity > 45)"
    " GROUP BY ALL ORDER BY ALL",
    "SELECT sum(l_extendedprice * l_discount) FROM lineitem WHERE l_shipdate >= DATE '1994-01-01'"
    " AND l_shipdate < DATE '1995-01-01' AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24",
    "SELECT o_custkey, sum(l_extendedprice) AS s FROM orders JOIN lineitem ON l_orderkey = o_orderkey"
    " WHERE l_returnflag = 'R' GROUP BY ALL ORDER BY s DESC LIMIT 20",
]


def tpch_available():
    try:
        import duckdb_ext
        duckdb_ext.init(duckdb.connect()).load_extension("tpch")
        return True
    except Exception as e:  # missing package or extension
        print(f"tpch extension unavailable ({e})", file=sys.stderr)
        return False


def load(path, kind, sf, synth_mb):
    t = time.perf_counter()
    con = duckdb.connect(path)
    if kind == "tpch":
        import duckdb_ext
        duckdb_ext.init(con)
        con.load_extension("tpch")
        con.execute(f"CALL dbgen(sf={sf})")
    else:
        # Deterministic (hash-based, no random()) so that both sides hold the same rows:
        # lineitem about 4/5 of the size, orders the rest; about 30 bytes per lineitem row.
        rows = synth_mb * 1_000_000 * 4 // 5 // 30
        orders = rows // 4
        con.execute(f"""
            CREATE TABLE orders AS SELECT
                range * 4 + 1 AS o_orderkey,
                (hash(range, 1) % 150000 + 1)::BIGINT AS o_custkey,
                (hash(range, 2) % 50000000) / 100.0 AS o_totalprice,
                DATE '1992-01-01' + (hash(range, 3) % 2400)::INTEGER AS o_orderdate,
                ['1-URGENT', '2-HIGH', '3-MEDIUM', '4-NOT SPECIFIED', '5-LOW'][(hash(range, 4) % 5 + 1)::BIGINT]
                    AS o_orderpriority,
                md5(range::VARCHAR) AS o_comment
            FROM range({orders})""")
        con.execute(f"""
            CREATE TABLE lineitem AS SELECT
                (range // 4) * 4 + 1 AS l_orderkey,
                (range % 4 + 1)::INTEGER AS l_linenumber,
                (hash(range, 5) % 50 + 1)::INTEGER AS l_quantity,
                (hash(range, 6) % 10000000) / 100.0 AS l_extendedprice,
                (hash(range, 7) % 11) / 100.0 AS l_discount,
                ['A', 'N', 'R'][(hash(range, 8) % 3 + 1)::BIGINT] AS l_returnflag,
                ['F', 'O'][(hash(range, 9) % 2 + 1)::BIGINT] AS l_linestatus,
                DATE '1992-01-02' + (hash(range, 10) % 2500)::INTEGER AS l_shipdate,
                md5((range * 7)::VARCHAR) AS l_comment
            FROM range({rows})""")
    con.execute("CHECKPOINT")
    con.close()
    print(json.dumps({"s": time.perf_counter() - t, "wchar": wchar()}))


def wchar():
    """Bytes this process has passed to write-type system calls so far (/proc/self/io)."""
    try:
        with open("/proc/self/io") as f:
            return int(next(l for l in f if l.startswith("wchar:")).split()[1])
    except (OSError, StopIteration, ValueError):
        return 0


def s3_list(bucket, prefix):
    """Objects and bytes under s3://BUCKET/PREFIX/ (endpoint and keys from AWS_* variables)."""
    import os
    import boto3
    from botocore.config import Config
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                      config=Config(s3={"addressing_style": "path"}))
    n = b = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            n += 1
            b += o["Size"]
    print(n, b)


def queries(path, kind):
    t = time.perf_counter()
    con = duckdb.connect(path)
    if kind == "tpch":
        import duckdb_ext
        duckdb_ext.init(con)
        con.load_extension("tpch")
    per = {}
    for n, q in enumerate(QUERIES if kind == "tpch" else SYNTH_QUERIES):
        tq = time.perf_counter()
        rows = con.execute(f"PRAGMA tpch({q})" if kind == "tpch" else q).fetchall()
        per[f"q{QUERIES[n]}"] = round(time.perf_counter() - tq, 4)
        assert rows, f"query {n} returned no rows"
    con.close()
    print(json.dumps({"s": time.perf_counter() - t, "queries": per, "wchar": wchar()}))


def txns(path, n, seed):
    """n small transactions, each followed by CHECKPOINT, chosen by key (not rowid) so both
    sides change the same rows whatever their physical order."""
    t = time.perf_counter()
    con = duckdb.connect(path)
    hi = con.execute("SELECT max(l_orderkey) FROM lineitem WHERE l_orderkey < 100000000").fetchone()[0]
    per = []
    for i in range(n):
        rng = random.Random(seed * 1000 + i)
        k, s, d = (rng.randrange(1, hi - 400) for _ in range(3))
        ti = time.perf_counter()
        con.execute("BEGIN")
        con.execute(
            "UPDATE lineitem SET l_quantity = l_quantity + 1, l_comment = $1 "
            f"WHERE l_orderkey BETWEEN {k} AND {k + 299}", [f"txn {seed}.{i}"])
        con.execute(
            f"UPDATE orders SET o_comment = $1 WHERE o_orderkey BETWEEN {k} AND {k + 99}",
            [f"txn {seed}.{i}"])
        con.execute(
            "INSERT INTO lineitem SELECT * REPLACE (l_orderkey + 100000000::BIGINT * $1 AS l_orderkey) "
            f"FROM lineitem WHERE l_orderkey BETWEEN {s} AND {s + 4}", [seed * 100 + i + 1])
        con.execute(f"DELETE FROM lineitem WHERE l_orderkey BETWEEN {d} AND {d + 4}")
        con.execute("COMMIT")
        tc = time.perf_counter()
        con.execute("CHECKPOINT")
        per.append((round(tc - ti, 4), round(time.perf_counter() - tc, 4)))
    con.close()
    print(json.dumps({"s": time.perf_counter() - t, "txn_s": [a for a, _ in per],
                      "checkpoint_s": [b for _, b in per], "wchar": wchar()}))


def verify(path):
    """Reopens the database and checks every table: row count and an order-independent
    checksum of every row."""
    t = time.perf_counter()
    con = duckdb.connect(path)
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() ORDER BY table_name").fetchall()]
    out = {}
    for name in tables:
        c, h = con.execute(f'SELECT count(*), sum(hash(t))::VARCHAR FROM "{name}" t').fetchone()
        out[name] = [c, h]
    con.close()
    print(json.dumps({"s": time.perf_counter() - t, "tables": out, "wchar": wchar()}, sort_keys=True))


def fsync_times(path):
    """Durations (seconds) of the fsync/fdatasync calls in an `strace -T` output, one a line."""
    import re
    pat = re.compile(r"\b(fsync|fdatasync)\(.*<(\d+\.\d+)>\s*$")
    with open(path) as f:
        for line in f:
            m = pat.search(line)
            if m:
                print(m.group(2))


S3_TYPES = ["GET", "PUT", "POST", "HEAD", "LIST", "DELETE"]


def s3_metrics(url):
    """Prints SeaweedFS' S3 request counts (all buckets, all status codes) for each of S3_TYPES,
    then everything else, then bytes received and sent: one line of integers."""
    import re, urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(url, timeout=10).read().decode()
    counts = dict.fromkeys(S3_TYPES + ["OTHER"], 0)
    rx = tx = 0
    for line in text.splitlines():
        m = re.match(r'SeaweedFS_s3_request_total\{(.*)\} (\S+)$', line)
        if m:
            t = re.search(r'type="([^"]*)"', m.group(1))
            t = t.group(1) if t and t.group(1) in counts else "OTHER"
            counts[t] += int(float(m.group(2)))
        m = re.match(r'SeaweedFS_s3_bucket_traffic_(received|sent)_bytes_total\{.*\} (\S+)$', line)
        if m:
            if m.group(1) == "received":
                rx += int(float(m.group(2)))
            else:
                tx += int(float(m.group(2)))
    print(" ".join(str(counts[t]) for t in S3_TYPES + ["OTHER"]), rx, tx)


def field(path, *keys):
    with open(path) as f:
        v = json.load(f)
    for k in keys:
        if k == "sum":
            v = sum(v)
        elif k == "len":
            v = len(v)
        elif isinstance(v, list):
            v = v[int(k)]
        else:
            v = v[k]
    print(round(v, 3) if isinstance(v, float) else v)


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "probe":
        print("tpch" if a[0] == "tpch" and tpch_available() else "synthetic")
    elif cmd == "load":
        load(a[0], a[1], a[2], int(a[3]))
    elif cmd == "queries":
        queries(a[0], a[1])
    elif cmd == "txns":
        txns(a[0], int(a[1]), int(a[2]))
    elif cmd == "verify":
        verify(a[0])
    elif cmd == "fsyncs":
        fsync_times(a[0])
    elif cmd == "s3ls":
        s3_list(a[0], a[1])
    elif cmd == "s3metrics":
        s3_metrics(a[0])
    elif cmd == "field":
        field(*a)
    else:
        sys.exit(f"unknown driver command {cmd}")
PY
drv() { "$PYTHON" "$DRIVER" "$@"; }
field() { drv field "$@"; }

KIND=$(drv probe "$DATA")
log "data: $KIND$([ "$KIND" = tpch ] && echo " sf=$SF")"
DB=workload.duckdb
LOCAL="$WORK/local"
MNT="$WORK/mnt"
mkdir -p "$LOCAL" "$MNT"
export QUACKFS_HOME="$WORK/home"
q() { "$QUACKFS" "$@"; }
q init wl >/dev/null 2>&1
bench_mount wl "$MNT"
log "mounted wl@main at $MNT in $T_REAL s (pid $MOUNT_PID)"
if [ "$BACKEND" = pgs3 ]; then read -r -a M_PREV <<<"$(drv s3metrics "$QUACKFS_SERVICES_S3_METRICS_URL")"; fi
declare -A S # S[phase.side] = seconds (from the driver)
declare -A OUT

# Runs one phase on one side: the driver's JSON goes to $WORK/PHASE.SIDE.json.
phase() { # PHASE SIDE DRIVER-ARGS…
    local name=$1 side=$2
    shift 2
    sync
    timed drv "$@"
    cp "$WORK/last.out" "$WORK/$name.$side.json"
    OUT[$name.$side]="$WORK/$name.$side.json"
    S[$name.$side]=$(field "$WORK/$name.$side.json" s)
    log "  $name on $side: ${S[$name.$side]} s (process wall $T_REAL s, user $T_USER, sys $T_SYS)"
    if [ "$side" = mount ]; then account "${name%%[0-9]*}" "$(field "$WORK/$name.$side.json" wchar)"; fi
}
# Per mount-side phase: bytes the driver passed to write calls (/proc/self/io wchar: what DuckDB
# wrote to the mount, plus a few bytes of stdout) and, with pgs3, the objects and bytes that
# appeared under the S3 prefix since the previous phase (listed after the phase's process ended;
# layer objects are written once, so new bytes = bytes uploaded).
# SeaweedFS' metrics (scripts/services.sh enables them) give the requests of each type and the
# bytes in and out per phase; they are read before the listing above, and again after it, so the
# benchmark's own LIST requests are not counted.
declare -A W=() PUTS=() UP=() REQ=()
S3_OBJS=0 S3_BYTES=0
S3_COLS=(GET PUT POST HEAD LIST DELETE OTHER RX TX)
s3_list() { drv s3ls "$QUACKFS_TEST_S3_BUCKET" "$S3_PREFIX"; }
s3_metrics() { drv s3metrics "$QUACKFS_SERVICES_S3_METRICS_URL"; }
account() { # GROUP WCHAR
    local n b i now=()
    W[$1]=$((${W[$1]:-0} + $2))
    if [ "$BACKEND" = pgs3 ]; then
        read -r -a now <<<"$(s3_metrics)"
        for i in "${!S3_COLS[@]}"; do
            REQ[$1.${S3_COLS[$i]}]=$((${REQ[$1.${S3_COLS[$i]}]:-0} + now[i] - ${M_PREV[$i]:-0}))
        done
        read -r n b <<<"$(s3_list)"
        PUTS[$1]=$((${PUTS[$1]:-0} + n - S3_OBJS))
        UP[$1]=$((${UP[$1]:-0} + b - S3_BYTES))
        S3_OBJS=$n S3_BYTES=$b
        read -r -a M_PREV <<<"$(s3_metrics)"
    fi
}
reopen_cache() { if [ "$COLD" = 1 ]; then drop_caches; fi; }
path_of() { if [ "$1" = local ]; then echo "$LOCAL/$DB"; else echo "$MNT/$DB"; fi; }

# Phases alternate between the sides, so a change in machine load hits both alike.
log "phase 1: create and load ($KIND), CHECKPOINT, close"
for side in local mount; do phase load "$side" load "$(path_of "$side")" "$KIND" "$SF" "$SYNTH_MB"; done
DB_SIZE_LOADED=$(stat -c %s "$LOCAL/$DB")
DB_SIZE_LOADED_MOUNT=$(stat -c %s "$MNT/$DB")

log "phase 2: reopen, five analytic queries, close ($BENCH_REPS runs, median)"
declare -A QT
for rep in $(seq "$BENCH_REPS"); do
    for side in local mount; do
        reopen_cache
        phase "queries$rep" "$side" queries "$(path_of "$side")" "$KIND"
        QT[$side]="${QT[$side]:-} ${S[queries$rep.$side]}"
    done
done
for side in local mount; do
    # shellcheck disable=SC2086 # word splitting of the time list is intended
    S[queries.$side]=$(median ${QT[$side]})
done

log "phase 3: $TXNS small transactions, each followed by CHECKPOINT"
for side in local mount; do
    reopen_cache
    phase txns "$side" txns "$(path_of "$side")" "$TXNS" 1
done

# The same phase once more under strace, for the fsync latency only (strace slows every call
# it traces, so its time is not the phase time). Both sides, so both end in the same state.
FSYNC_LOCAL="nan nan 0" FSYNC_MOUNT="nan nan 0"
if [ "$STRACE" = 1 ]; then
    log "phase 3b: the same $TXNS transactions (other keys) under strace -f -T -e trace=fsync,fdatasync"
    for side in local mount; do
        reopen_cache
        sync
        timed strace -f -T -e trace=fsync,fdatasync -o "$WORK/strace.$side" \
            "$PYTHON" "$DRIVER" txns "$(path_of "$side")" "$TXNS" 2
        drv fsyncs "$WORK/strace.$side" >"$WORK/fsync.$side"
        log "  under strace on $side: $T_REAL s wall, $(wc -l <"$WORK/fsync.$side") fsync/fdatasync calls"
        if [ "$side" = mount ]; then account txns_strace "$(field "$WORK/last.out" wchar)"; fi
    done
    FSYNC_LOCAL=$(quantiles "$WORK/fsync.local")
    FSYNC_MOUNT=$(quantiles "$WORK/fsync.mount")
fi

log "phase 4: reopen and verify (row counts and row checksums of every table)"
for side in local mount; do
    reopen_cache
    phase verify "$side" verify "$(path_of "$side")"
done
VERIFY_OK=true
if ! diff <(field "${OUT[verify.local]}" tables) <(field "${OUT[verify.mount]}" tables) >"$WORK/verify.diff"; then
    VERIFY_OK=false
    log "verify: the tables differ between local disk and the mount (local <, mount >):"
    cat "$WORK/verify.diff" >&2
fi
TABLES=$("$PYTHON" -c 'import json,sys; t=json.load(open(sys.argv[1]))["tables"]; print(", ".join(f"{k} {v[0]}" for k, v in t.items()))' "${OUT[verify.mount]}")

# --- Storage: what the mount left vs what is stored -----------------------------------------
LOCAL_FILES=$(find "$LOCAL" -maxdepth 1 -type f -printf '%f %s\n' | sort | tr '\n' ' ')
MOUNT_FILES=$(find "$MNT" -maxdepth 1 -type f -printf '%f %s\n' | sort | tr '\n' ' ')
LOGICAL_MOUNT=$(find "$MNT" -maxdepth 1 -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
LOGICAL_LOCAL=$(find "$LOCAL" -maxdepth 1 -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
# What DuckDB left on the mount, kept to check the head after merge + gc byte for byte.
mkdir -p "$WORK/final"
cp "$MNT/$DB" "$WORK/final/$DB"
bench_umount "$MNT"
UMOUNT_S=$T_REAL
log "unmounted in $UMOUNT_S s"
if [ "$BACKEND" = pgs3 ]; then
    # The unmount may upload a last piece after the verify phase; the copy above reads the file
    # through the mount (GETs). Counted before status/repos/log read layer footers.
    account unmount 0
fi
q --json status >"$WORK/status.json"
q --json repos >"$WORK/repos.json"
q --json log -n 1000000 >"$WORK/log.json"
COMMITS=$(field "$WORK/log.json" len)
UNCOMMITTED=$(field "$WORK/status.json" uncommitted_bytes)
HEAD_LOGICAL=$(field "$WORK/repos.json" 0 logical_bytes)
# Stored bytes and layer objects: objects/layers in the data dir, or the objects under the S3
# prefix (pgs3). Prints "BYTES OBJECTS".
stored() {
    if [ "$BACKEND" = pgs3 ]; then
        s3_list | awk '{print $2, $1}'
    else
        echo "$(dir_bytes "$QUACKFS_HOME/objects/layers")" "$(find "$QUACKFS_HOME/objects/layers" -type f | wc -l)"
    fi
}
read -r STORED LAYERS <<<"$(stored)"
STORED_CATALOG=$(field "$WORK/repos.json" 0 stored_bytes)
# Layers kept in the catalog (small syncs) are stored bytes too.
INLINE=$(field "$WORK/repos.json" 0 inline_bytes)
STORED=$((STORED + INLINE))

# Exports the head and compares it with what DuckDB left on the mount. Sets SAME.
same_head() { # AFTER-WHAT
    local diff
    rm -rf "$WORK/export"
    q export main "$WORK/export" >/dev/null 2>"$WORK/last.err"
    SAME=true
    if ! diff=$(compare_files "$WORK/final/$DB" "$WORK/export/$DB"); then
        SAME=false
        log "error: after $1 the head differs from what DuckDB left on the mount: $diff"
    fi
}
same_head unmount
HEAD_SAME_UMOUNT=$SAME

log "quackfs merge, then gc --retain 0s --grace 0s"
timed q --json merge
cp "$WORK/last.out" "$WORK/merge.json"
MERGE_S=$T_REAL
MERGE_BYTES=$(field "$WORK/merge.json" bytes_written)
same_head merge
HEAD_SAME_MERGE=$SAME
timed q --json gc --retain 0s --grace 0s
cp "$WORK/last.out" "$WORK/gc.json"
GC_S=$T_REAL
GC_DELETED=$(field "$WORK/gc.json" deleted_bytes)
q --json repos >"$WORK/repos.json"
read -r STORED_GC LAYERS_GC <<<"$(stored)"
STORED_GC_CATALOG=$(field "$WORK/repos.json" 0 stored_bytes)
INLINE_GC=$(field "$WORK/repos.json" 0 inline_bytes)
STORED_GC=$((STORED_GC + INLINE_GC))
LOGICAL_GC=$(field "$WORK/repos.json" 0 logical_bytes)
same_head gc
HEAD_SAME_GC=$SAME
EXPORT_FILES=$(find "$WORK/export" -maxdepth 1 -type f -printf '%f %s\n' | sort | tr '\n' ' ')
rm -rf "$WORK/export" "$WORK/final"
HEAD_SAME=true
if [ "$HEAD_SAME_UMOUNT" != true ] || [ "$HEAD_SAME_MERGE" != true ] || [ "$HEAD_SAME_GC" != true ]; then
    HEAD_SAME=false
fi

# --- Report -----------------------------------------------------------------------------------
for side in local mount; do
    S[total.$side]=$(awk -v a="${S[load.$side]}" -v b="${S[queries.$side]}" -v c="${S[txns.$side]}" \
        -v d="${S[verify.$side]}" 'BEGIN { printf "%.3f\n", a + b + c + d }')
done
declare -A TARGET=([load]="" [queries]=$TARGET_QUERIES [txns]=$TARGET_TXNS [verify]="" [total]=$TARGET_TOTAL)
declare -A LABEL=(
    [load]="load: dbgen + CHECKPOINT + close"
    [queries]="reopen + 5 queries + close"
    [txns]="$TXNS txns, each + CHECKPOINT"
    [verify]="reopen + verify + close"
    [total]="whole workload"
)
R_STORED=$(ratio "$STORED" "$LOGICAL_MOUNT")
R_STORED_GC=$(ratio "$STORED_GC" "$LOGICAL_MOUNT")
read -r FL_MED FL_P99 FL_N <<<"$FSYNC_LOCAL"
read -r FM_MED FM_P99 FM_N <<<"$FSYNC_MOUNT"
ms() { awk -v s="$1" 'BEGIN { if (s == "nan") print "-"; else printf "%.2f ms\n", s * 1000 }'; }

echo
echo "== quackfs DuckDB workload benchmark: local disk vs mount ($(date -u +%Y-%m-%dT%H:%M:%SZ)) =="
if [ "$BACKEND" = pgs3 ]; then
    echo "backend:     pgs3: catalog PostgreSQL 127.0.0.1:$QUACKFS_SERVICES_PG_PORT, store $QUACKFS_STORE (SeaweedFS $AWS_ENDPOINT_URL), both throwaway"
else
    echo "backend:     embedded catalog + local objects ($QUACKFS_HOME)"
fi
machine_info | grep -v '^page cache:'
echo "load before: $LOAD_START"
echo "load after:  $(load_now)"
echo "data:        $KIND$([ "$KIND" = tpch ] && echo " sf=$SF"), $DB $DB_SIZE_LOADED bytes ($(mib "$DB_SIZE_LOADED")) after the load (on the mount: $DB_SIZE_LOADED_MOUNT)"
echo "driver:      Python duckdb $("$PYTHON" -c 'import duckdb; print(duckdb.__version__)'), one process per phase; times from connect to close"
echo "page cache:  $(if [ "$COLD" = 1 ]; then echo 'dropped before every reopen (BENCH_COLD=1)'; else echo 'warm (BENCH_COLD=1 drops it before every reopen)'; fi)"
echo
echo "-- time (seconds) --"
printf '%-34s %9s %9s %8s  %s\n' "phase" "local" "mount" "ratio" "target"
for p in load queries txns verify total; do
    r=$(ratio "${S[$p.mount]}" "${S[$p.local]}")
    t=${TARGET[$p]}
    v=""
    if [ -n "$t" ]; then v="$(verdict "$r" "$t") (<= $t)"; fi
    printf '%-34s %9s %9s %8s  %s\n' "${LABEL[$p]}" "${S[$p.local]}" "${S[$p.mount]}" "$r" "$v"
done
list_median() { # JSON-FILE KEY: median of a list of numbers
    # shellcheck disable=SC2046 # one argument per number is intended
    median $(field "$1" "$2" | tr -d '[],')
}
for k in txn_s checkpoint_s; do
    lm=$(list_median "${OUT[txns.local]}" "$k") mm=$(list_median "${OUT[txns.mount]}" "$k")
    label="  one txn up to COMMIT (median)"
    if [ "$k" = checkpoint_s ]; then label="  one CHECKPOINT (median)"; fi
    printf '%-34s %9s %9s %8s\n' "$label" "$lm" "$mm" "$(ratio "$mm" "$lm")"
done
for qn in q1 q3 q5 q6 q10; do
    lq=() mq=()
    for rep in $(seq "$BENCH_REPS"); do
        lq+=("$(field "${OUT[queries$rep.local]}" queries "$qn")")
        mq+=("$(field "${OUT[queries$rep.mount]}" queries "$qn")")
    done
    lm=$(median "${lq[@]}") mm=$(median "${mq[@]}")
    printf '%-34s %9s %9s %8s\n' "  query $qn (median)" "$lm" "$mm" "$(ratio "$mm" "$lm")"
done
echo "(whole workload = load + queries (median of $BENCH_REPS) + transactions + verify; the mount is unmounted after it: $UMOUNT_S s)"
echo
echo "-- fsync/fdatasync latency, $TXNS transactions under strace (separate run; strace adds overhead) --"
printf '%-34s %9s %9s %6s\n' "" "median" "p99" "calls"
printf '%-34s %9s %9s %6s\n' "local disk ($(fs_type "$BENCH_DIR"))" "$(ms "$FL_MED")" "$(ms "$FL_P99")" "$FL_N"
printf '%-34s %9s %9s %6s\n' "quackfs mount" "$(ms "$FM_MED")" "$(ms "$FM_P99")" "$FM_N"
echo
echo "-- correctness --"
echo "verify (row counts + row checksums equal on both sides): $VERIFY_OK  ($TABLES)"
echo "files left on local disk: $LOCAL_FILES"
echo "files left on the mount:  $MOUNT_FILES"
echo "exported head after gc:   $EXPORT_FILES"
echo "head byte-identical to the file DuckDB left on the mount: after unmount $HEAD_SAME_UMOUNT, after merge $HEAD_SAME_MERGE, after gc $HEAD_SAME_GC"
echo
echo "-- storage ($COMMITS commits, $LAYERS layer objects before gc, $LAYERS_GC after) --"
printf '%-52s %14s %s\n' "logical bytes that survive (files on the mount)" "$LOGICAL_MOUNT" "($(mib "$LOGICAL_MOUNT"); local disk $LOGICAL_LOCAL; head commit says $HEAD_LOGICAL, after gc $LOGICAL_GC)"
printf '%-52s %14s %s\n' "uncommitted after unmount (status)" "$UNCOMMITTED" ""
WHERE_STORED="objects/layers + catalog"
if [ "$BACKEND" = pgs3 ]; then WHERE_STORED="S3 prefix + catalog"; fi
printf '%-52s %14s %s\n' "stored after the run ($WHERE_STORED)" "$STORED" "($(mib "$STORED"), $INLINE kept in the catalog; catalog says $STORED_CATALOG)"
printf '%-52s %14s  %s\n' "ratio stored / logical, after the run" "$R_STORED" "$(verdict "$R_STORED" "$TARGET_STORED") (target <= $TARGET_STORED; includes all history)"
printf '%-52s %14s %s\n' "merge: bytes written" "$MERGE_BYTES" "in $MERGE_S s ($(mbps "$MERGE_BYTES" "$MERGE_S"))"
printf '%-52s %14s %s\n' "gc --retain 0s --grace 0s: bytes deleted" "$GC_DELETED" "in $GC_S s"
printf '%-52s %14s %s\n' "stored after merge + gc ($WHERE_STORED)" "$STORED_GC" "($(mib "$STORED_GC"), $INLINE_GC kept in the catalog; catalog says $STORED_GC_CATALOG)"
printf '%-52s %14s  %s\n' "ratio stored / logical, after merge + gc" "$R_STORED_GC" "$(verdict "$R_STORED_GC" "$TARGET_STORED") (target <= $TARGET_STORED)"
W_TOTAL=0 UP_TOTAL=0 PUT_TOTAL=0
GROUPS_ALL=(load queries txns txns_strace verify unmount)
for g in "${GROUPS_ALL[@]}"; do
    W_TOTAL=$((W_TOTAL + ${W[$g]:-0}))
    UP_TOTAL=$((UP_TOTAL + ${UP[$g]:-0}))
    PUT_TOTAL=$((PUT_TOTAL + ${PUTS[$g]:-0}))
done
R_UPLOAD=nan
if [ "$BACKEND" = pgs3 ]; then R_UPLOAD=$(ratio "$UP_TOTAL" "$W_TOTAL"); fi
if [ "$BACKEND" = pgs3 ]; then
    echo
    echo "-- S3 traffic per mount-side phase (objects and bytes new under the prefix after each phase) --"
    printf '%-34s %16s %10s %16s %8s\n' "phase" "DuckDB wrote" "objects" "bytes uploaded" "up/wrote"
    declare -A GLABEL=([load]="load" [queries]="queries ($BENCH_REPS runs)" [txns]="$TXNS txns"
        [txns_strace]="$TXNS txns under strace" [verify]="verify" [unmount]="copy off the mount + unmount")
    for g in "${GROUPS_ALL[@]}"; do
        if [ "$g" = txns_strace ] && [ "$STRACE" != 1 ]; then continue; fi
        printf '%-34s %16s %10s %16s %8s\n' "${GLABEL[$g]}" "${W[$g]:-0}" "${PUTS[$g]:-0}" "${UP[$g]:-0}" "$(ratio "${UP[$g]:-0}" "${W[$g]:-0}")"
    done
    printf '%-34s %16s %10s %16s %8s  %s\n' "whole workload" "$W_TOTAL" "$PUT_TOTAL" "$UP_TOTAL" "$R_UPLOAD" "$(verdict "$R_UPLOAD" "$TARGET_UPLOAD") (<= $TARGET_UPLOAD)"
    echo "(DuckDB wrote = bytes the driver process passed to write/pwrite calls, /proc/self/io wchar; bytes"
    echo " uploaded = sizes of the objects new under the prefix (objects are written once). Uploads still in"
    echo " flight when a phase ends count for the next phase.)"
    echo
    echo "-- S3 requests per mount-side phase (SeaweedFS metrics: every request, any status) --"
    printf '%-34s' "phase"; printf ' %8s' "${S3_COLS[@]:0:7}"; printf ' %14s %14s\n' "bytes in" "bytes out"
    for g in "${GROUPS_ALL[@]}" total; do
        if [ "$g" = txns_strace ] && [ "$STRACE" != 1 ]; then continue; fi
        label=${GLABEL[$g]:-whole workload}
        printf '%-34s' "$label"
        for c in "${S3_COLS[@]}"; do
            v=0
            if [ "$g" = total ]; then
                for g2 in "${GROUPS_ALL[@]}"; do v=$((v + ${REQ[$g2.$c]:-0})); done
            else
                v=${REQ[$g.$c]:-0}
            fi
            if [ "$c" = RX ] || [ "$c" = TX ]; then printf ' %14s' "$v"; else printf ' %8s' "$v"; fi
            if [ "$g" = total ]; then REQ[total.$c]=$v; fi
        done
        echo
    done
    echo "(PUT = object uploads and multipart parts, POST = multipart create/complete; bytes in = request"
    echo " bodies SeaweedFS received, bytes out = response bodies it sent, i.e. reads.)"
fi
echo "elapsed: $((SECONDS - T0)) s; results appended to $BENCH_DIR/results.jsonl"

args=(
    bench=duckdb_workload "time=$(date -u +%Y-%m-%dT%H:%M:%SZ)" "git=$(git_rev)" "host=$(hostname)"
    "nproc=$(nproc)" "fs=$(fs_type "$BENCH_DIR")" "data=$KIND" "sf=$SF" "db_bytes=$DB_SIZE_LOADED"
    "reps=$BENCH_REPS" "txns=$TXNS" "cold=$COLD" "loadavg_start=${LOAD_START%% (*}" "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
)
for p in load queries txns verify total; do
    args+=("s.$p.local=${S[$p.local]}" "s.$p.mount=${S[$p.mount]}" "ratio.$p=$(ratio "${S[$p.mount]}" "${S[$p.local]}")")
done
args+=(
    "fsync.local.median_s=$FL_MED" "fsync.local.p99_s=$FL_P99" "fsync.local.calls=$FL_N"
    "fsync.mount.median_s=$FM_MED" "fsync.mount.p99_s=$FM_P99" "fsync.mount.calls=$FM_N"
    "verify_ok=$VERIFY_OK" "commits=$COMMITS" "logical_bytes=$LOGICAL_MOUNT" "head_logical_bytes=$HEAD_LOGICAL"
    "uncommitted_bytes=$UNCOMMITTED" "stored_bytes=$STORED" "stored_bytes_catalog=$STORED_CATALOG"
    "ratio.stored=$R_STORED" "merge_s=$MERGE_S" "merge_bytes=$MERGE_BYTES" "gc_s=$GC_S"
    "gc_deleted_bytes=$GC_DELETED" "stored_bytes_gc=$STORED_GC" "ratio.stored_gc=$R_STORED_GC"
    "backend=$BACKEND" "duckdb_wrote_bytes=$W_TOTAL" "s3_objects=$PUT_TOTAL" "s3_uploaded_bytes=$UP_TOTAL" "ratio.upload=$R_UPLOAD"
    "s3_requests.get=${REQ[total.GET]:-}" "s3_requests.put=${REQ[total.PUT]:-}" "s3_requests.post=${REQ[total.POST]:-}"
    "s3_requests.head=${REQ[total.HEAD]:-}" "s3_requests.list=${REQ[total.LIST]:-}" "s3_requests.delete=${REQ[total.DELETE]:-}"
    "s3_bytes_in=${REQ[total.RX]:-}" "s3_bytes_out=${REQ[total.TX]:-}"
    "umount_s=$UMOUNT_S" "head_same.umount=$HEAD_SAME_UMOUNT" "head_same.merge=$HEAD_SAME_MERGE" "head_same.gc=$HEAD_SAME_GC"
)
append_result "${args[@]}"
if [ "$VERIFY_OK" != true ] || [ "$HEAD_SAME" != true ]; then
    die "the data on the mount or after merge + gc is not what DuckDB wrote (see above)"
fi
