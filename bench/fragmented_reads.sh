#!/usr/bin/env bash
# Benchmark: reads of a history fragmented by many small syncs, cold, against local disk (issue
# "Performance", goal 3), with fio (a third-party tool).
#
#   bash bench/fragmented_reads.sh      (from the repository root; see bench/README.md)
#
# fio writes BENCH_FIO_JOBS (4) files of BENCH_FIO_SIZE (128m) with random 4 KiB writes and an
# fsync every 64 writes (--verify=crc32c), on local disk and on an embedded quackfs mount. The
# mount is then unmounted (its background compaction of small pending layers had the run's time),
# mounted again, the page cache dropped, and `fio --verify_only` reads and checks every block;
# the local side is read cold the same way. Target: cold verified reads on the mount >= 0.5x local.
set -euo pipefail

BENCH_NAME=fragmented_reads
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

JOBS=${BENCH_FIO_JOBS:-4}
SIZE=${BENCH_FIO_SIZE:-128m}
command -v fio >/dev/null || die "fio not found (apt-get install fio)"
resolve_quackfs
setup_workdir
trap_mounts
probe_drop_caches
[ -n "$CAN_DROP_CACHES" ] || log "warning: the page cache cannot be dropped: reads are warm"

FIO_COMMON=(--name=frag --rw=randwrite --bs=4k --size="$SIZE" --numjobs="$JOBS" --fsync=64
    --verify=crc32c --verify_fatal=1 --ioengine=psync --group_reporting --output-format=json)

# fio on DIR: write phase; prints MiB/s.
fio_write() { # DIR
    (cd "$WORK" && fio "${FIO_COMMON[@]}" --directory="$1" --do_verify=0) >"$WORK/fio-w.json"
    "$PYTHON" -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.1f" % (j["jobs"][0]["write"]["bw"] / 1024))' "$WORK/fio-w.json"
}
# fio --verify_only on DIR: reads and checks every block; prints MiB/s (bytes / elapsed).
fio_verify() { # DIR
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$WORK" && fio "${FIO_COMMON[@]}" --directory="$1" --verify_only) >"$WORK/fio-v.json"
    t1=$(date +%s.%N)
    "$PYTHON" -c 'import json,sys; j=json.load(open(sys.argv[1])); e=j["jobs"][0]["error"]; assert e == 0, e' "$WORK/fio-v.json"
    awk -v t0="$t0" -v t1="$t1" -v n="$JOBS" -v s="${SIZE%m}" 'BEGIN { printf "%.1f\n", n * s / (t1 - t0) }'
}

LOAD_BEFORE=$(load_now)
mkdir -p "$WORK/local"
log "local: write"
LOCAL_W=$(fio_write "$WORK/local")
drop_caches
log "local: verify (cold)"
LOCAL_V=$(fio_verify "$WORK/local")

export QUACKFS_HOME=$WORK/home
"$QUACKFS" init frag >/dev/null 2>&1
bench_mount frag "$WORK/mnt"
log "mount: write"
MNT_W=$(fio_write "$WORK/mnt")
PENDING=$("$QUACKFS" -r frag status --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["uncommitted_layers"])' 2>/dev/null || echo "?")
bench_umount "$WORK/mnt"
bench_mount frag "$WORK/mnt"
drop_caches
log "mount: verify (cold, after remount)"
MNT_V=$(fio_verify "$WORK/mnt")
bench_umount "$WORK/mnt"
LOAD_AFTER=$(load_now)

R_W=$(ratio "$MNT_W" "$LOCAL_W")
R_V=$(ratio "$MNT_V" "$LOCAL_V")
echo "fragmented history: fio $JOBS x $SIZE random 4 KiB writes, fsync every 64, then cold verify"
machine_info
echo "load before: $LOAD_BEFORE"
echo "load after:  $LOAD_AFTER"
echo "pending layers after the writes (compacted by the mount): $PENDING"
printf '%-8s %-14s %-22s\n' side "write MiB/s" "cold verify MiB/s"
printf '%-8s %-14s %-22s\n' local "$LOCAL_W" "$LOCAL_V"
printf '%-8s %-14s %-22s\n' mount "$MNT_W" "$MNT_V"
echo "write:        ${R_W}x local"
echo "cold verify:  ${R_V}x local (target >= 0.5): $(awk -v v="$R_V" 'BEGIN { print (v + 0 >= 0.5) ? "PASS" : "MISS" }')"
append_result bench=fragmented_reads local_write="$LOCAL_W" mount_write="$MNT_W" local_verify="$LOCAL_V" mount_verify="$MNT_V"
