#!/usr/bin/env bash
# Benchmark: time from a commit on host A to its visibility on host B through `mount --follow`
# (issue "Live read replicas"), on PostgreSQL + S3 (throwaway servers on 127.0.0.1).
#
#   bash bench/follow_latency.sh      (from the repository root; see bench/README.md)
#
# Host A and host B are two data directories sharing one catalog and one bucket. A mounts
# db@main writable; B mounts db@main --follow. BENCH_FOLLOW_COMMITS (100) times, A runs one
# `INSERT …; CHECKPOINT` on a connection it keeps open (Python duckdb; a checkpoint commit, made
# as CHECKPOINT returns: the WAL's removal is registered with it right after); the time from its
# return until a new open on B sees the new commit
# (the follower gives a changed file a new inode: `stat` on B shows it) is one sample. Each
# commit waits a random part of the poll interval first, so commits fall anywhere in the
# follower's cycle. (A duckdb
# CLI per commit would start the clock only once the CLI process has exited, which can take
# longer than the follower: such samples read near zero.) Prints median and max
# on PostgreSQL + S3 (woken by LISTEN/NOTIFY) and on the embedded default (two processes of one
# host, polling).
set -euo pipefail

BENCH_NAME=follow_latency
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COMMITS=${BENCH_FOLLOW_COMMITS:-100}
INTERVAL_MS=250
resolve_quackfs
setup_workdir
trap_mounts
trap 'cleanup_mounts; cleanup_services; cleanup_workdir' EXIT
start_services 0
export QUACKFS_CATALOG=$QUACKFS_TEST_PG_URL
export QUACKFS_STORE=s3://$QUACKFS_TEST_S3_BUCKET/follow-$(date +%s)

# Runs COMMITS commits on A's mount and measures each on B's; prints milliseconds per commit.
measure() { # A_DB B_DB
    "$PYTHON" - "$1" "$2" "$COMMITS" "$INTERVAL_MS" <<'PY'
import os, random, sys, time
import duckdb
a, b, n, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) / 1000
con = duckdb.connect(a)
time.sleep(1)
for i in range(n):
    # A commit made right after the follower moved would always wait a whole poll interval:
    # commit at a random moment of the follower's cycle instead.
    time.sleep(random.uniform(0, interval))
    before = os.stat(b).st_ino
    con.execute(f"INSERT INTO t VALUES ({i})")
    con.execute("CHECKPOINT")
    t0 = time.monotonic()
    while os.stat(b).st_ino == before:
        if time.monotonic() - t0 > 30:
            sys.exit("the follower did not move within 30 s")
        time.sleep(0.0005)
    print("%.1f" % ((time.monotonic() - t0) * 1000))
con.close()
PY
}
stats() { "$PYTHON" -c '
import sys, statistics
v = sorted(float(x) for x in sys.stdin if x.strip())
print(f"{statistics.median(v):.1f} {v[-1]:.1f} {len(v)}")'; }

run() { # NAME INTERVAL HOME_A HOME_B
    local name=$1 interval=$2
    export QUACKFS_HOME=$3
    "$QUACKFS" init "db$name" >/dev/null 2>&1
    bench_mount "db$name@main" "$WORK/$name-wa"
    "$PYTHON" -c 'import duckdb, sys; c = duckdb.connect(sys.argv[1]); c.execute("CREATE TABLE t(i BIGINT)"); c.execute("CHECKPOINT"); c.close()' \
        "$WORK/$name-wa/db$name.duckdb"
    export QUACKFS_HOME=$4
    bench_mount "db$name@main" "$WORK/$name-rb" --follow --follow-interval "$interval"
    log "$name: $COMMITS commits on host A, visibility on host B"
    measure "$WORK/$name-wa/db$name.duckdb" "$WORK/$name-rb/db$name.duckdb" >"$WORK/$name.ms"
    bench_umount "$WORK/$name-rb"
    export QUACKFS_HOME=$3
    bench_umount "$WORK/$name-wa"
}
run pgs3 "${INTERVAL_MS}ms" "$WORK/pgs3-a" "$WORK/pgs3-b"
read -r P_MED P_MAX P_N <<<"$(stats <"$WORK/pgs3.ms")"
# The embedded default has no notifications: a second process of the same host polls.
(
    unset QUACKFS_CATALOG QUACKFS_STORE
    run embedded "${INTERVAL_MS}ms" "$WORK/emb" "$WORK/emb"
)
read -r E_MED E_MAX E_N <<<"$(stats <"$WORK/embedded.ms")"
machine_info
echo "commit on host A -> visible to a new open on host B (mount --follow, --follow-interval ${INTERVAL_MS}ms)"
printf '%-34s %-8s %-12s %-10s\n' side commits "median ms" "max ms"
printf '%-34s %-8s %-12s %-10s\n' "PostgreSQL + S3, two hosts (NOTIFY)" "$P_N" "$P_MED" "$P_MAX"
printf '%-34s %-8s %-12s %-10s\n' "embedded, two processes (polling)" "$E_N" "$E_MED" "$E_MAX"
append_result bench=follow_latency commits="$P_N" pgs3_median_ms="$P_MED" pgs3_max_ms="$P_MAX" embedded_median_ms="$E_MED" embedded_max_ms="$E_MAX"
