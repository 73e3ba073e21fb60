#!/usr/bin/env bash
# Benchmark: concurrent fsyncs on one mount (issue "Performance", goal 2), against local disk in
# the same run.
#
#   bash bench/group_commit.sh      (from the repository root; see bench/README.md)
#
# 1. Group commit. fio (a third-party tool) runs BENCH_FIO_JOBS (4) jobs of random 4 KiB writes
#    with an fsync after every write (BENCH_GC_SIZE, 2m, per job) on local disk, on an embedded
#    mount and on a PostgreSQL + S3 mount (S3 behind bench/delay_proxy.py adding
#    BENCH_S3_DELAY_MS, 25 ms, per round trip; PostgreSQL durable). Reported: fsync latency
#    (median / p99) and fsyncs per second per side, and on the mounts the syncs the mount
#    registered against the catalog transactions that registered them (its metrics endpoint).
#    Target: fewer catalog transactions than syncs on both mounts (concurrent fsyncs share one).
# 2. No fsync waits behind an upload of another file (PostgreSQL + S3). A writer appends 4 KiB to
#    one file and fsyncs it, BENCH_GC_SMALL (300) times, alone and then while another process
#    rewrites BENCH_GC_BIG_MB (32) MiB of a second file and fsyncs it in a loop (each of those
#    syncs uploads a layer through the delayed S3). Target: the small fsyncs' p99 while uploads
#    run stays under half the median upload fsync (a small fsync that waited for an upload would
#    take at least as long as one).
set -euo pipefail

BENCH_NAME=group_commit
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

JOBS=${BENCH_FIO_JOBS:-4}
SIZE=${BENCH_GC_SIZE:-2m}
SMALL=${BENCH_GC_SMALL:-300}
BIG_MB=${BENCH_GC_BIG_MB:-32}
DELAY=${BENCH_S3_DELAY_MS:-25}
command -v fio >/dev/null || die "fio not found (apt-get install fio)"
resolve_quackfs
setup_workdir
trap_mounts
trap 'cleanup_mounts; cleanup_proxy; cleanup_services; cleanup_workdir' EXIT
start_services 1
start_delay_proxy "$DELAY"
LOAD_BEFORE=$(load_now)

# The mounts, each serving its metrics on a port of 127.0.0.1.
EMB_HOME=$WORK/emb EMB_PORT=$(free_port)
PG_HOME=$WORK/pgs3 PG_PORT=$(free_port)
PG_STORE=s3://$QUACKFS_TEST_S3_BUCKET/gc-$(date +%s)
pgs3() { QUACKFS_HOME=$PG_HOME QUACKFS_CATALOG=$QUACKFS_TEST_PG_URL QUACKFS_STORE=$PG_STORE AWS_ENDPOINT_URL=http://127.0.0.1:$PROXY_PORT "$@"; }
QUACKFS_HOME=$EMB_HOME "$QUACKFS" init gc >/dev/null 2>&1
QUACKFS_HOME=$EMB_HOME bench_mount gc "$WORK/mnt-emb" --metrics "127.0.0.1:$EMB_PORT"
pgs3 "$QUACKFS" init gc >/dev/null 2>&1
pgs3 bench_mount gc "$WORK/mnt-pgs3" --metrics "127.0.0.1:$PG_PORT"
mkdir -p "$WORK/local"

# metric PORT NAME: the value of a counter the mount at PORT serves.
metric() {
    "$PYTHON" - "$1" "$2" <<'PY'
import sys, urllib.request
port, name = sys.argv[1], sys.argv[2]
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
for line in text.splitlines():
    if line.startswith(name + " ") or line.startswith(name + "{"):
        print(int(float(line.split()[-1])))
        break
else:
    print(0)
PY
}
SYNCS=quackfs_fsync_duration_seconds_count
REGS=quackfs_registrations_total

# fio_sync DIR: concurrent fsync writers; prints "MEDIAN_MS P99_MS FSYNCS_PER_S".
fio_sync() {
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$WORK" && fio --name=gc --rw=randwrite --bs=4k --size="$SIZE" --numjobs="$JOBS" --fsync=1 \
        --ioengine=psync --group_reporting --output-format=json --directory="$1") >"$WORK/fio.json"
    t1=$(date +%s.%N)
    "$PYTHON" - "$WORK/fio.json" "$t0" "$t1" <<'PY'
import json, sys
lat = json.load(open(sys.argv[1]))["jobs"][0]["sync"]["lat_ns"]
pct = lat["percentile"]
print(f'{pct["50.000000"] / 1e6:.3f} {pct["99.000000"] / 1e6:.3f} {lat["N"] / (float(sys.argv[3]) - float(sys.argv[2])):.0f}')
PY
}

declare -A FMED FP99 FRATE SY RG
for side in local embedded pgs3; do
    case $side in
        local) dir=$WORK/local port= ;;
        embedded) dir=$WORK/mnt-emb port=$EMB_PORT ;;
        pgs3) dir=$WORK/mnt-pgs3 port=$PG_PORT ;;
    esac
    log "$side: fio, $JOBS jobs x $SIZE of 4 KiB writes, fsync after each"
    if [ -n "$port" ]; then s0=$(metric "$port" $SYNCS) r0=$(metric "$port" $REGS); fi
    read -r FMED[$side] FP99[$side] FRATE[$side] <<<"$(fio_sync "$dir")"
    if [ -n "$port" ]; then
        SY[$side]=$(($(metric "$port" $SYNCS) - s0)) RG[$side]=$(($(metric "$port" $REGS) - r0))
    fi
    rm -f "$dir"/gc.*
done

# Part 2: small fsyncs while another file's syncs upload.
SMALL_PY=$WORK/small.py
cat >"$SMALL_PY" <<'PY'
import os, statistics, sys, time
path, n = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
block = os.urandom(4096)
ms = []
for _ in range(n):
    t = time.perf_counter()
    os.write(fd, block)
    os.fsync(fd)
    ms.append((time.perf_counter() - t) * 1000)
os.close(fd)
ms.sort()
print(f"{statistics.median(ms):.3f} {ms[min(len(ms) - 1, int(0.99 * len(ms)))]:.3f} {ms[-1]:.3f}")
PY
BIG_PY=$WORK/big.py
cat >"$BIG_PY" <<'PY'
import os, sys, time
path, mb, stop, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
ms = []
while not os.path.exists(stop) or not ms:
    data = os.urandom(1 << 20)
    t = time.perf_counter()
    for i in range(mb):
        os.pwrite(fd, data, i << 20)
    w = time.perf_counter()
    os.fsync(fd)
    ms.append((time.perf_counter() - w) * 1000)
os.close(fd)
with open(out, "w") as f:
    f.write(" ".join(f"{m:.3f}" for m in ms) + "\n")
PY
log "pgs3: $SMALL small fsyncs alone"
read -r ALONE_MED ALONE_P99 ALONE_MAX <<<"$("$PYTHON" "$SMALL_PY" "$WORK/mnt-pgs3/small.bin" "$SMALL")"
up0=$(metric "$PG_PORT" quackfs_uploads_total)
log "pgs3: $SMALL small fsyncs while $BIG_MB MiB syncs of another file upload"
rm -f "$WORK/stop"
"$PYTHON" "$BIG_PY" "$WORK/mnt-pgs3/big.bin" "$BIG_MB" "$WORK/stop" "$WORK/big.ms" &
BIG_PID=$!
sleep 1
read -r BUSY_MED BUSY_P99 BUSY_MAX <<<"$("$PYTHON" "$SMALL_PY" "$WORK/mnt-pgs3/small.bin" "$SMALL")"
touch "$WORK/stop"
wait "$BIG_PID"
UPLOADS=$(($(metric "$PG_PORT" quackfs_uploads_total) - up0))
read -r -a BIG_MS <"$WORK/big.ms"
BIG_MED=$(median "${BIG_MS[@]}")
QUACKFS_HOME=$EMB_HOME bench_umount "$WORK/mnt-emb"
pgs3 bench_umount "$WORK/mnt-pgs3"
LOAD_AFTER=$(load_now)

echo "group commit: concurrent fsyncs on one mount (fio, $JOBS jobs, 4 KiB writes, fsync after each, $SIZE per job)"
machine_info
echo "load before: $LOAD_BEFORE"
echo "load after:  $LOAD_AFTER"
echo "S3 round trip added: $DELAY ms (bench/delay_proxy.py on 127.0.0.1); PostgreSQL durable"
printf '%-10s %-10s %-10s %-10s %-8s %-10s %-14s %-10s\n' side "fsync ms" "p99 ms" "fsyncs/s" "vs local" syncs "catalog txns" "syncs/txn"
for s in local embedded pgs3; do
    per=-
    if [ -n "${SY[$s]:-}" ] && [ "${RG[$s]}" -gt 0 ]; then per=$(ratio "${SY[$s]}" "${RG[$s]}"); fi
    printf '%-10s %-10s %-10s %-10s %-8s %-10s %-14s %-10s\n' "$s" "${FMED[$s]}" "${FP99[$s]}" "${FRATE[$s]}" \
        "$(ratio "${FRATE[$s]}" "${FRATE[local]}")" "${SY[$s]:--}" "${RG[$s]:--}" "$per"
done
group() { awk -v s="$1" -v r="$2" 'BEGIN { print (r + 0 > 0 && r + 0 < s + 0) ? "PASS" : "MISS" }'; }
echo "embedded: ${SY[embedded]} syncs in ${RG[embedded]} catalog transactions (target: fewer): $(group "${SY[embedded]}" "${RG[embedded]}")"
echo "pgs3:     ${SY[pgs3]} syncs in ${RG[pgs3]} catalog transactions (target: fewer): $(group "${SY[pgs3]}" "${RG[pgs3]}")"
echo
echo "small fsyncs (4 KiB append + fsync, $SMALL) on pgs3, ms:"
printf '%-34s %-8s %-8s %-8s\n' "" median p99 max
printf '%-34s %-8s %-8s %-8s\n' "alone" "$ALONE_MED" "$ALONE_P99" "$ALONE_MAX"
printf '%-34s %-8s %-8s %-8s\n' "while another file's syncs upload" "$BUSY_MED" "$BUSY_P99" "$BUSY_MAX"
echo "the other file: ${#BIG_MS[@]} syncs of $BIG_MB MiB meanwhile, median fsync $BIG_MED ms, $UPLOADS objects uploaded"
HALF=$(awk -v m="$BIG_MED" 'BEGIN { printf "%.3f\n", m / 2 }')
echo "small fsync p99 while uploads run: $BUSY_P99 ms (target <= half the upload fsync, $HALF ms): $(verdict "$BUSY_P99" "$HALF")"
append_result bench=group_commit jobs="$JOBS" delay_ms="$DELAY" \
    local_fsync_ms="${FMED[local]}" embedded_fsync_ms="${FMED[embedded]}" pgs3_fsync_ms="${FMED[pgs3]}" \
    embedded_syncs="${SY[embedded]}" embedded_txns="${RG[embedded]}" pgs3_syncs="${SY[pgs3]}" pgs3_txns="${RG[pgs3]}" \
    small_alone_ms="$ALONE_MED" small_busy_p99_ms="$BUSY_P99" upload_fsync_ms="$BIG_MED"
