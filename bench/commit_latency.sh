#!/usr/bin/env bash
# Benchmark: what a DuckDB commit costs on a mount, against DuckDB on a local-disk file in the
# same run (issue "Performance", goal 1; goal 2, concurrent fsyncs, is bench/group_commit.sh).
#
#   bash bench/commit_latency.sh      (from the repository root; see bench/README.md)
#
# Three sides, the same Python duckdb 1.4.4 workloads on each:
#   local     a file on local disk (the baseline)
#   embedded  a quackfs mount on the embedded default (SQLite catalog, local objects)
#   pgs3      a quackfs mount on PostgreSQL + S3 (SeaweedFS), throwaway servers on 127.0.0.1,
#             S3 behind bench/delay_proxy.py adding BENCH_S3_DELAY_MS (25) per round trip;
#             PostgreSQL durable (fsync and synchronous_commit on) unless BENCH_PG_DURABLE=0
# Workloads: BENCH_SINGLE (1000) single-row autocommit INSERTs, and BENCH_TXNS (20) transactions
# of UPDATE 1000 rows + INSERT 100 + COMMIT + CHECKPOINT on a BENCH_ROWS (1000000) row table.
#
# Targets: embedded single-row commits <= 1.2x local, embedded transactions <= 1.15x local;
# pgs3 median transaction within 3 ms of local (with the 25 ms S3 round trip).
set -euo pipefail

BENCH_NAME=commit_latency
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SINGLE=${BENCH_SINGLE:-1000}
TXNS=${BENCH_TXNS:-20}
ROWS=${BENCH_ROWS:-1000000}
DELAY=${BENCH_S3_DELAY_MS:-25}
DRIVER="$BENCH_ROOT/bench/latency_driver.py"

resolve_quackfs
setup_workdir
trap_mounts
trap 'cleanup_mounts; cleanup_proxy; cleanup_services; cleanup_workdir' EXIT
start_services "${BENCH_PG_DURABLE:-1}"
start_delay_proxy "$DELAY"

# Runs a driver phase on DB; prints its per-transaction milliseconds.
drv() { "$PYTHON" "$DRIVER" "$@"; }
stats() { # "MS MS …" -> "MEDIAN P99"
    tr ' ' '\n' | "$PYTHON" -c '
import sys, statistics
v = sorted(float(x) for x in sys.stdin if x.strip())
print(f"{statistics.median(v):.2f} {v[min(len(v) - 1, int(0.99 * len(v)))]:.2f}")'
}
median() { tr ' ' '\n' | "$PYTHON" -c 'import sys, statistics; print(f"{statistics.median(float(x) for x in sys.stdin if x.strip()):.3f}")'; }

# The sides are set up first (all three mounted at once), then measured in ROUNDS rounds, each
# running both workloads on local, embedded and pgs3 in turn: a change in the machine's load hits
# every side of a round alike. Reported per side: the median over the rounds of each round's
# median (and p99); ratios and differences are taken within each round, then their median.
ROUNDS=${BENCH_ROUNDS:-5}
SIDES=(local embedded pgs3)
declare -A DB SMED SP99 TMED TP99 SALL TALL
setup_side() { # NAME DB
    DB[$1]=$2
    log "$1: setup ($ROWS rows)"
    drv "$2" setup "$ROWS" >/dev/null
}

probe_drop_caches
LOAD_BEFORE=$(load_now)
mkdir -p "$WORK/local"
setup_side local "$WORK/local/lat.duckdb"

EMB_HOME=$WORK/emb
QUACKFS_HOME=$EMB_HOME "$QUACKFS" init lat >/dev/null 2>&1
QUACKFS_HOME=$EMB_HOME bench_mount lat "$WORK/mnt-emb"
setup_side embedded "$WORK/mnt-emb/lat.duckdb"

PG_HOME=$WORK/pgs3
PG_STORE=s3://$QUACKFS_TEST_S3_BUCKET/lat-$(date +%s)
pgs3() { QUACKFS_HOME=$PG_HOME QUACKFS_CATALOG=$QUACKFS_TEST_PG_URL QUACKFS_STORE=$PG_STORE AWS_ENDPOINT_URL=http://127.0.0.1:$PROXY_PORT "$@"; }
pgs3 "$QUACKFS" init lat >/dev/null 2>&1
pgs3 bench_mount lat "$WORK/mnt-pgs3"
setup_side pgs3 "$WORK/mnt-pgs3/lat.duckdb"

for r in $(seq "$ROUNDS"); do
    for s in "${SIDES[@]}"; do
        log "round $r/$ROUNDS, $s: $SINGLE single-row commits, $TXNS transactions"
        read -r m p <<<"$(drv "${DB[$s]}" single "$SINGLE" | stats)"
        SALL[$s]+="$m " SP99[$s]+="$p "
        read -r m p <<<"$(drv "${DB[$s]}" txns "$TXNS" | stats)"
        TALL[$s]+="$m " TP99[$s]+="$p "
    done
done
QUACKFS_HOME=$EMB_HOME bench_umount "$WORK/mnt-emb"
pgs3 bench_umount "$WORK/mnt-pgs3"
LOAD_AFTER=$(load_now)

# per_round OP SIDE ALL: OP (ratio | diff) of SIDE against local, round by round, median.
per_round() {
    local -a a b
    read -r -a a <<<"$2"
    read -r -a b <<<"$3"
    for i in "${!a[@]}"; do
        if [ "$1" = ratio ]; then ratio "${a[$i]}" "${b[$i]}"; else awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN { printf "%.3f\n", x - y }'; fi
    done | median
}
for s in "${SIDES[@]}"; do
    SMED[$s]=$(median <<<"${SALL[$s]}") TMED[$s]=$(median <<<"${TALL[$s]}")
    SP99[$s]=$(median <<<"${SP99[$s]}") TP99[$s]=$(median <<<"${TP99[$s]}")
done
within() { awk -v v="$1" -v t="$2" 'BEGIN { print (v + 0 <= t + 0) ? "PASS" : "MISS" }'; }
echo "commit latency (median / p99 ms per transaction; Python duckdb $("$PYTHON" -c 'import duckdb; print(duckdb.__version__)'))"
machine_info
echo "load before: $LOAD_BEFORE"
echo "load after:  $LOAD_AFTER"
echo "S3 round trip added: $DELAY ms (bench/delay_proxy.py on 127.0.0.1)"
echo "rounds: $ROUNDS (each: $SINGLE single-row commits and $TXNS transactions per side; medians over rounds)"
printf '%-10s %-22s %-8s %-22s %-8s\n' side "single-row commit" ratio "txn (upd+ins+ckpt)" ratio
for s in "${SIDES[@]}"; do
    printf '%-10s %-22s %-8s %-22s %-8s\n' "$s" "${SMED[$s]} / ${SP99[$s]}" \
        "$(per_round ratio "${SALL[$s]}" "${SALL[local]}")" "${TMED[$s]} / ${TP99[$s]}" \
        "$(per_round ratio "${TALL[$s]}" "${TALL[local]}")"
done
echo "per round, local single-row: ${SALL[local]}ms; local txn: ${TALL[local]}ms"
R_ES=$(per_round ratio "${SALL[embedded]}" "${SALL[local]}")
R_ET=$(per_round ratio "${TALL[embedded]}" "${TALL[local]}")
D_PS=$(per_round diff "${SALL[pgs3]}" "${SALL[local]}")
D_PT=$(per_round diff "${TALL[pgs3]}" "${TALL[local]}")
echo "embedded single-row commit: ${R_ES}x local (target <= 1.2): $(verdict "$R_ES" 1.2)"
echo "embedded transaction:       ${R_ET}x local (target <= 1.15): $(verdict "$R_ET" 1.15)"
echo "pgs3 single-row commit:     +${D_PS} ms vs local (target <= +3 ms): $(within "$D_PS" 3)"
echo "pgs3 transaction:           +${D_PT} ms vs local (target <= +3 ms): $(within "$D_PT" 3)"
append_result bench=commit_latency delay_ms="$DELAY" \
    local_single_ms="${SMED[local]}" embedded_single_ms="${SMED[embedded]}" pgs3_single_ms="${SMED[pgs3]}" \
    local_txn_ms="${TMED[local]}" embedded_txn_ms="${TMED[embedded]}" pgs3_txn_ms="${TMED[pgs3]}"
