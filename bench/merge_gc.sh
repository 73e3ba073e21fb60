#!/usr/bin/env bash
# Benchmark: merge and gc after many small commits (issue "merge and gc").
#
#   bash bench/merge_gc.sh             (from the repository root; see bench/README.md)
#
# Environment:
#   QUACKFS=target/release/quackfs   binary under test
#   BENCH_DIR=/tmp/quackfs-bench     local-disk work area: cache/ (generated database, shared with
#                                    import_export.sh), results.jsonl (appended), run.* (temp)
#   BENCH_REPS=3                     mount + full scan measurements per state (median reported)
#   BENCH_COMMITS=1000               small commits (UPDATE one row + CHECKPOINT on a mount)
#   BENCH_COMMIT_BUDGET=540          stop making commits after this many seconds (reported)
#   BENCH_SF=1                       TPC-H scale factor
#   BENCH_DATA=tpch|synthetic        force the data set (default: tpch, synthetic if unavailable)
#   BENCH_SYNTH_MB=300               approximate size of the synthetic database
#   BENCH_KEEP=1                     keep the temp directory for inspection
#
# Issue targets: mount <= 1 s after merge; full scan within 1.2x of a fresh import; stored bytes
# <= 1.1x the live logical bytes after `gc --retain 0s --grace 0s`.
set -euo pipefail

BENCH_NAME=merge_gc
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COMMITS=${BENCH_COMMITS:-1000}
BUDGET=${BENCH_COMMIT_BUDGET:-540}
SF=${BENCH_SF:-1}
DATA=${BENCH_DATA:-tpch}
SYNTH_MB=${BENCH_SYNTH_MB:-300}
TARGET_MOUNT=1.0
TARGET_SCAN=1.2
TARGET_STORED=1.1

resolve_quackfs
setup_workdir
trap_mounts
probe_drop_caches
T0=$SECONDS
LOAD_START=$(load_now)

# --- Python helper: the commits and the full scan -------------------------------------------
HELPER="$WORK/helper.py"
cat >"$HELPER" <<'PY'
import json, random, sys, time

import duckdb


def commits(path, n, budget):
    """n times: UPDATE one row of lineitem (spread over the table) + CHECKPOINT, in one session;
    each completed checkpoint makes a checkpoint commit on the mount. Stops after budget s."""
    t = time.perf_counter()
    con = duckdb.connect(path)
    rows = con.execute("SELECT max(rowid) + 1 FROM lineitem").fetchone()[0]
    rng = random.Random(7)
    per = []
    for i in range(n):
        if time.perf_counter() - t > budget:
            print(f"commit budget of {budget} s used up after {i} commits", file=sys.stderr)
            break
        ti = time.perf_counter()
        con.execute(f"UPDATE lineitem SET l_quantity = l_quantity + 1 WHERE rowid = {rng.randrange(rows)}")
        con.execute("CHECKPOINT")
        per.append(time.perf_counter() - ti)
        if (i + 1) % 100 == 0:
            print(f"  {i + 1} commits, {time.perf_counter() - t:.1f} s", file=sys.stderr)
    con.close()
    per.sort()
    print(json.dumps({"n": len(per), "s": time.perf_counter() - t,
                      "median_s": per[len(per) // 2] if per else None,
                      "p99_s": per[max(0, -(-len(per) * 99 // 100) - 1)] if per else None}))


def scan(path, table):
    """Full scan: every row and column of the table (read-only); time from connect to close."""
    t = time.perf_counter()
    try:
        con = duckdb.connect(path, read_only=True)
        n, h = con.execute(f'SELECT count(*), sum(hash(t))::VARCHAR FROM "{table}" t').fetchone()
        con.close()
        print(json.dumps({"s": time.perf_counter() - t, "result": f"{n} rows, checksum {h}"}))
    except duckdb.Error as e:  # reported, not fatal: the benchmark goes on and fails at the end
        print(f"full scan failed: {e}", file=sys.stderr)
        print(json.dumps({"s": time.perf_counter() - t, "result": f"ERROR {str(e)[:160]}"}))


def biggest(path):
    con = duckdb.connect(path, read_only=True)
    print(con.execute("SELECT table_name FROM duckdb_tables() ORDER BY estimated_size DESC LIMIT 1").fetchone()[0])


def field(path, *keys):
    with open(path) as f:
        v = json.load(f)
    for k in keys:
        if k == "len":
            v = len(v)
        elif isinstance(v, list):
            v = v[int(k)]
        else:
            v = v[k]
    print(round(v, 3) if isinstance(v, float) else v)


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "commits":
        commits(a[0], int(a[1]), float(a[2]))
    elif cmd == "scan":
        scan(a[0], a[1])
    elif cmd == "biggest":
        biggest(a[0])
    elif cmd == "field":
        field(*a)
    else:
        sys.exit(f"unknown helper command {cmd}")
PY
helper() { "$PYTHON" "$HELPER" "$@"; }
field() { helper field "$@"; }
q() { "$QUACKFS" "$@"; }

# --- 1. The database, imported, then many small commits through a mount -----------------------
log "preparing the database (cached in $BENCH_DIR/cache)"
SRC=$(bench_database "$DATA" "$SF" "$SYNTH_MB")
[ -f "$SRC" ] || die "no database was generated"
DB=$(basename "$SRC")
DB_SIZE=$(stat -c %s "$SRC")
DATA_KIND=${DB%%-*}
TABLE=$(helper biggest "$SRC")
log "database: $SRC ($(mib "$DB_SIZE")), biggest table $TABLE"
if [ "$DB_SIZE" -lt $((250 * 1000 * 1000)) ]; then log "warning: the database is smaller than the issue's 250 MB"; fi

HOME_MAIN="$WORK/home"
HOME_FRESH="$WORK/fresh-home"
export QUACKFS_HOME="$HOME_MAIN"
timed q init mg --import "$SRC" -m "initial import"
IMPORT_S=$T_REAL
log "imported in $IMPORT_S s"

MNT="$WORK/mnt"
bench_mount mg "$MNT"
log "writable mount of mg@main (pid $MOUNT_PID); $COMMITS x (UPDATE one row + CHECKPOINT), budget $BUDGET s"
helper commits "$MNT/$DB" "$COMMITS" "$BUDGET" >"$WORK/commits.json"
COMMITS_DONE=$(field "$WORK/commits.json" n)
COMMITS_S=$(field "$WORK/commits.json" s)
COMMIT_MED=$(field "$WORK/commits.json" median_s)
COMMIT_P99=$(field "$WORK/commits.json" p99_s)
bench_umount "$MNT"
UMOUNT_S=$T_REAL
q --json log -n 1000000 >"$WORK/log.json"
LOG_COMMITS=$(field "$WORK/log.json" len)
CHECKPOINT_COMMITS=$("$PYTHON" -c 'import json,sys; print(sum(c["kind"] == "checkpoint" for c in json.load(open(sys.argv[1]))))' "$WORK/log.json")
log "$COMMITS_DONE updates+checkpoints in $COMMITS_S s (median $COMMIT_MED s, p99 $COMMIT_P99 s); log has $LOG_COMMITS commits ($CHECKPOINT_COMMITS checkpoint); unmounted in $UMOUNT_S s"
if [ "$CHECKPOINT_COMMITS" -lt "$COMMITS_DONE" ]; then
    log "warning: fewer checkpoint commits ($CHECKPOINT_COMMITS) than completed checkpoints ($COMMITS_DONE)"
fi

# --- 2. Mount time and full scan per state ---------------------------------------------------
# Each repetition: drop the page cache, time `mount --read-only --daemon` (until ready), time a
# read of the first 4 KiB (the mount's first request), drop the page cache again, time the full
# scan in a new process, unmount. The same for every state and for the fresh import.
declare -A M  # M[state.metric] = median
declare -A CK # CK[state] = scan checksum
measure() { # STATE REV
    local state=$1 rev=$2 rep mt=() ft=() st=() dir="$WORK/ro-$1"
    for rep in $(seq "$BENCH_REPS"); do
        drop_caches
        bench_mount "$rev" "$dir" --read-only
        mt+=("$T_REAL")
        timed head -c 4096 "$dir/$DB"
        ft+=("$T_REAL")
        drop_caches
        timed helper scan "$dir/$DB" "$TABLE"
        cp "$WORK/last.out" "$WORK/scan-$state-$rep.json"
        st+=("$(field "$WORK/scan-$state-$rep.json" s)")
        CK[$state]=$(field "$WORK/scan-$state-$rep.json" result)
        bench_umount "$dir"
        log "  $state rep $rep: mount ${mt[-1]} s, first read ${ft[-1]} s, full scan ${st[-1]} s (${CK[$state]})"
    done
    M[$state.mount]=$(median "${mt[@]}")
    M[$state.first]=$(median "${ft[@]}")
    M[$state.scan]=$(median "${st[@]}")
}
storage() { # STATE: stored bytes (objects/layers and catalog), layer objects, chain depth of main
    local state=$1
    q --json repos >"$WORK/repos-$state.json"
    q --json show main >"$WORK/show-$state.json"
    # (Layers kept in the catalog, small syncs, are stored bytes too.)
    M[$state.stored]=$(($(dir_bytes "$QUACKFS_HOME/objects/layers") + $(field "$WORK/repos-$state.json" 0 inline_bytes)))
    M[$state.stored_catalog]=$(field "$WORK/repos-$state.json" 0 stored_bytes)
    M[$state.logical]=$(field "$WORK/repos-$state.json" 0 logical_bytes)
    M[$state.objects]=$(find "$QUACKFS_HOME/objects/layers" -type f | wc -l)
    M[$state.chain]=$(field "$WORK/show-$state.json" chain_layers)
}

# The head before any maintenance, exported: the reference for every later state and the input
# of the fresh import.
timed q export main "$WORK/head"
EXPORT_S=$T_REAL
# Exports the head again and compares it with the reference, byte for byte. Sets SAME.
same_head() { # STATE
    local diff
    rm -rf "$WORK/head-$1"
    q export main "$WORK/head-$1" >/dev/null 2>"$WORK/last.err"
    SAME=true
    if ! diff=$(compare_files "$WORK/head/$DB" "$WORK/head-$1/$DB"); then
        SAME=false
        log "error: after $1 the head differs from before the merge: $diff"
    fi
    rm -rf "$WORK/head-$1"
}

storage before
log "before merge: ${M[before.objects]} layer objects, chain of main ${M[before.chain]} layers, stored $(mib "${M[before.stored]}")"
measure before mg@main

log "quackfs merge"
sync
timed q --json merge
cp "$WORK/last.out" "$WORK/merge.json"
MERGE_S=$T_REAL
MERGE_BYTES=$(field "$WORK/merge.json" bytes_written)
MERGE_SEGMENTS=$(field "$WORK/merge.json" merged_segments len)
MERGE_IMAGES=$(field "$WORK/merge.json" images len)
storage merged
same_head merge
MERGE_SAME=$SAME
log "merge: $MERGE_BYTES bytes written in $MERGE_S s ($MERGE_SEGMENTS commits' segments merged, $MERGE_IMAGES images); chain of main ${M[merged.chain]} layers"
measure merged mg@main

log "quackfs gc --retain 0s --grace 0s"
sync
timed q --json gc --retain 0s --grace 0s
cp "$WORK/last.out" "$WORK/gc.json"
GC_S=$T_REAL
GC_DELETED=$(field "$WORK/gc.json" deleted_bytes)
GC_ORPHANS=$(field "$WORK/gc.json" orphan_bytes)
GC_LAYERS=$(field "$WORK/gc.json" deleted_layers)
GC_EXPIRED=$(field "$WORK/gc.json" expired_commits)
GC_IMAGES=$(field "$WORK/gc.json" images_written)
storage gc
same_head gc
GC_SAME=$SAME
log "gc: $GC_DELETED bytes in $GC_LAYERS layers deleted in $GC_S s, $GC_EXPIRED commits expired; stored $(mib "${M[gc.stored]}")"
measure gc mg@main

# --- 3. A fresh import of the same head (exported before the merge), for the scan comparison ----
export QUACKFS_HOME="$HOME_FRESH"
timed q init fresh --import "$WORK/head/$DB" -m "fresh import of mg@main"
FRESH_IMPORT_S=$T_REAL
rm -rf "$WORK/head"
storage fresh
log "fresh import: exported in $EXPORT_S s, imported in $FRESH_IMPORT_S s, stored $(mib "${M[fresh.stored]}")"
measure fresh fresh@main
export QUACKFS_HOME="$HOME_MAIN"

SCAN_OK=true
for s in before merged gc; do
    if [ "${CK[$s]}" != "${CK[fresh]}" ]; then
        SCAN_OK=false
        log "error: the full scan $s gives '${CK[$s]}', the fresh import '${CK[fresh]}'"
    fi
done

# --- 4. Report ---------------------------------------------------------------------------------
LIVE=${M[gc.logical]}
echo
echo "== quackfs merge/gc benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ)) =="
machine_info
echo "load before: $LOAD_START"
echo "load after:  $(load_now)"
echo "database:    $DB, $DB_SIZE bytes ($(mib "$DB_SIZE")), $DATA_KIND; full scan: count(*), sum(hash(row)) of $TABLE"
echo "commits:     $COMMITS_DONE of $COMMITS small commits (UPDATE 1 row + CHECKPOINT on a writable mount) in $COMMITS_S s:" \
    "median $COMMIT_MED s, p99 $COMMIT_P99 s each; log of main: $LOG_COMMITS commits, $CHECKPOINT_COMMITS of them checkpoint commits"
if [ "$COMMITS_DONE" -lt "$COMMITS" ]; then
    echo "             NOTE: only $COMMITS_DONE commits: the budget BENCH_COMMIT_BUDGET=$BUDGET s ran out"
fi
echo "repetitions: $BENCH_REPS per state, median shown; page cache $(if [ -n "$CAN_DROP_CACHES" ]; then echo 'dropped'; else echo 'NOT dropped (not root)'; fi) before every mount and every scan"
echo
echo "-- read-only mount of main, and full scan (seconds, median) --"
printf '%-26s %7s %8s %10s %9s %11s  %-16s %s\n' "state" "layers" "mount" "1st read" "scan" "scan/fresh" "mount target" "scan target"
for s in before merged gc fresh; do
    r=$(ratio "${M[$s.scan]}" "${M[fresh.scan]}")
    mv="" sv=""
    if [ "$s" = merged ] || [ "$s" = gc ]; then
        mv="$(verdict "${M[$s.mount]}" "$TARGET_MOUNT") (<= ${TARGET_MOUNT}s)"
        sv="$(verdict "$r" "$TARGET_SCAN") (<= $TARGET_SCAN)"
    fi
    if [ "${CK[$s]}" != "${CK[fresh]}" ]; then
        r="WRONG" sv="FAIL: the scan read wrong data (below)"
    fi
    label=$s
    case $s in
        before) label="before merge" ;;
        merged) label="after merge" ;;
        gc) label="after merge + gc" ;;
        fresh) label="fresh import of the head" ;;
    esac
    printf '%-26s %7s %8s %10s %9s %11s  %-16s %s\n' "$label" "${M[$s.chain]}" "${M[$s.mount]}" "${M[$s.first]}" \
        "${M[$s.scan]}" "$r" "$mv" "$sv"
done
echo "(layers = layers in main's read chain, quackfs show; 1st read = reading 4 KiB of the file right after the mount)"
echo "full scans agree (rows + checksum, all states and the fresh import): $SCAN_OK (fresh import: ${CK[fresh]})"
for s in before merged gc; do
    if [ "${CK[$s]}" != "${CK[fresh]}" ]; then echo "    $s: ${CK[$s]}"; fi
done
echo "head byte-identical to before the merge (export + cmp): after merge $MERGE_SAME, after gc $GC_SAME"
echo
echo "-- storage --"
printf '%-46s %14s %s\n' "live logical bytes (head of main)" "$LIVE" "($(mib "$LIVE"))"
for s in before merged gc fresh; do
    label="stored, $s"
    case $s in
        before) label="stored before merge" ;;
        merged) label="stored after merge" ;;
        gc) label="stored after gc" ;;
        fresh) label="stored by a fresh import" ;;
    esac
    r=$(ratio "${M[$s.stored]}" "$LIVE")
    v=""
    if [ "$s" = gc ]; then v="$(verdict "$r" "$TARGET_STORED") (target <= $TARGET_STORED)"; fi
    printf '%-46s %14s %-34s %6s x live  %s\n' "$label" "${M[$s.stored]}" \
        "($(mib "${M[$s.stored]}"), ${M[$s.objects]} objects)" "$r" "$v"
done
printf '%-46s %14s %s\n' "catalog stored_bytes before / merge / gc" "${M[before.stored_catalog]}" "/ ${M[merged.stored_catalog]} / ${M[gc.stored_catalog]}"
echo
echo "-- maintenance throughput --"
printf '%-46s %10s s  %14s bytes  %s\n' "merge (bytes written)" "$MERGE_S" "$MERGE_BYTES" "$(mbps "$MERGE_BYTES" "$MERGE_S")  ($MERGE_SEGMENTS commits' segments merged, $MERGE_IMAGES images)"
printf '%-46s %10s s  %14s bytes  %s\n' "gc --retain 0s --grace 0s (bytes deleted)" "$GC_S" "$GC_DELETED" "$(mbps "$GC_DELETED" "$GC_S")  ($GC_LAYERS layers, $GC_EXPIRED commits expired, $GC_IMAGES images written, orphans $GC_ORPHANS bytes)"
printf '%-46s %10s s\n' "first import (init --import)" "$IMPORT_S"
echo "elapsed: $((SECONDS - T0)) s; results appended to $BENCH_DIR/results.jsonl"

args=(
    bench=merge_gc "time=$(date -u +%Y-%m-%dT%H:%M:%SZ)" "git=$(git_rev)" "host=$(hostname)"
    "nproc=$(nproc)" "fs=$(fs_type "$BENCH_DIR")" "data=$DATA_KIND" "db_bytes=$DB_SIZE"
    "reps=$BENCH_REPS" "commits_requested=$COMMITS" "commits=$COMMITS_DONE" "commits_s=$COMMITS_S"
    "commit_median_s=$COMMIT_MED" "commit_p99_s=$COMMIT_P99" "log_commits=$LOG_COMMITS"
    "loadavg_start=${LOAD_START%% (*}" "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
    "cold=$([ -n "$CAN_DROP_CACHES" ] && echo true || echo false)" "live_bytes=$LIVE"
    "merge_s=$MERGE_S" "merge_bytes=$MERGE_BYTES" "gc_s=$GC_S" "gc_deleted_bytes=$GC_DELETED"
    "ratio.stored_gc=$(ratio "${M[gc.stored]}" "$LIVE")"
    "ratio.scan_merged=$(ratio "${M[merged.scan]}" "${M[fresh.scan]}")"
    "scan_ok=$SCAN_OK" "merge_same_head=$MERGE_SAME" "gc_same_head=$GC_SAME"
)
while read -r k; do args+=("m.$k=${M[$k]}"); done < <(printf '%s\n' "${!M[@]}" | sort)
append_result "${args[@]}"
if [ "$SCAN_OK" != true ] || [ "$MERGE_SAME" != true ] || [ "$GC_SAME" != true ]; then
    die "merge/gc changed what the head reads (see above)"
fi
