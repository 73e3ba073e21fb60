#!/usr/bin/env bash
# Benchmark: what a DuckDB commit costs on a mount, against DuckDB on a local-disk file in the
# same run (issue "Performance", goals 1 and 2).
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
SVC=$(mktemp -d /tmp/qfs-bench-svc.XXXXXX)
PROXY_PID=
cleanup_proxy() { if [ -n "$PROXY_PID" ]; then kill "$PROXY_PID" 2>/dev/null || true; fi; }
trap 'cleanup_mounts; cleanup_proxy; cleanup_services; cleanup_workdir' EXIT
log "starting PostgreSQL + S3 in $SVC (durable PostgreSQL: ${BENCH_PG_DURABLE:-1})"
QUACKFS_SERVICES_DURABLE=${BENCH_PG_DURABLE:-1} bash "$BENCH_ROOT/scripts/services.sh" up "$SVC" >/dev/null 2>"$WORK/services.log" ||
    { cat "$WORK/services.log" >&2; die "scripts/services.sh up failed"; }
# shellcheck source=/dev/null
. "$SVC/env"
PROXY_PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$PYTHON" "$BENCH_ROOT/bench/delay_proxy.py" "$PROXY_PORT" "$QUACKFS_SERVICES_S3_PORT" "$DELAY" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 100); do grep -q ready "$WORK/proxy.log" 2>/dev/null && break; sleep 0.05; done
log "S3 through a proxy adding $DELAY ms per round trip: http://127.0.0.1:$PROXY_PORT"

# Runs a driver phase on DB; prints its per-transaction milliseconds.
drv() { "$PYTHON" "$DRIVER" "$@"; }
stats() { # "MS MS …" -> "MEDIAN P99"
    tr ' ' '\n' | "$PYTHON" -c '
import sys, statistics
v = sorted(float(x) for x in sys.stdin if x.strip())
print(f"{statistics.median(v):.2f} {v[min(len(v) - 1, int(0.99 * len(v)))]:.2f}")'
}

declare -A SMED SP99 TMED TP99
run_side() { # NAME DB
    local name=$1 db=$2
    log "$name: setup ($ROWS rows)"
    drv "$db" setup "$ROWS" >/dev/null
    log "$name: $SINGLE single-row commits"
    read -r SMED[$name] SP99[$name] <<<"$(drv "$db" single "$SINGLE" | stats)"
    log "$name: $TXNS transactions"
    read -r TMED[$name] TP99[$name] <<<"$(drv "$db" txns "$TXNS" | stats)"
}

probe_drop_caches
LOAD_BEFORE=$(load_now)
mkdir -p "$WORK/local"
run_side local "$WORK/local/lat.duckdb"

export QUACKFS_HOME=$WORK/emb
"$QUACKFS" init lat >/dev/null 2>&1
bench_mount lat "$WORK/mnt-emb"
run_side embedded "$WORK/mnt-emb/lat.duckdb"
bench_umount "$WORK/mnt-emb"

export QUACKFS_HOME=$WORK/pgs3
export QUACKFS_CATALOG=$QUACKFS_TEST_PG_URL
export QUACKFS_STORE=s3://$QUACKFS_TEST_S3_BUCKET/lat-$(date +%s)
export AWS_ENDPOINT_URL=http://127.0.0.1:$PROXY_PORT
"$QUACKFS" init lat >/dev/null 2>&1
bench_mount lat "$WORK/mnt-pgs3"
run_side pgs3 "$WORK/mnt-pgs3/lat.duckdb"
bench_umount "$WORK/mnt-pgs3"
LOAD_AFTER=$(load_now)

plus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.2f\n", a - b }'; }
within() { awk -v v="$1" -v t="$2" 'BEGIN { print (v + 0 <= t + 0) ? "PASS" : "MISS" }'; }
echo "commit latency (median / p99 ms per transaction; Python duckdb $("$PYTHON" -c 'import duckdb; print(duckdb.__version__)'))"
machine_info
echo "load before: $LOAD_BEFORE"
echo "load after:  $LOAD_AFTER"
echo "S3 round trip added: $DELAY ms (bench/delay_proxy.py on 127.0.0.1)"
printf '%-10s %-22s %-8s %-22s %-8s\n' side "single-row commit" ratio "txn (upd+ins+ckpt)" ratio
for s in local embedded pgs3; do
    printf '%-10s %-22s %-8s %-22s %-8s\n' "$s" "${SMED[$s]} / ${SP99[$s]}" \
        "$(ratio "${SMED[$s]}" "${SMED[local]}")" "${TMED[$s]} / ${TP99[$s]}" \
        "$(ratio "${TMED[$s]}" "${TMED[local]}")"
done
R_ES=$(ratio "${SMED[embedded]}" "${SMED[local]}")
R_ET=$(ratio "${TMED[embedded]}" "${TMED[local]}")
D_PS=$(plus "${SMED[pgs3]}" "${SMED[local]}")
D_PT=$(plus "${TMED[pgs3]}" "${TMED[local]}")
echo "embedded single-row commit: ${R_ES}x local (target <= 1.2): $(verdict "$R_ES" 1.2)"
echo "embedded transaction:       ${R_ET}x local (target <= 1.15): $(verdict "$R_ET" 1.15)"
echo "pgs3 single-row commit:     ${D_PS} ms vs local (target <= +3 ms): $(within "$D_PS" 3)"
echo "pgs3 transaction:           ${D_PT} ms vs local (target <= +3 ms): $(within "$D_PT" 3)"
append_result bench=commit_latency delay_ms="$DELAY" \
    local_single_ms="${SMED[local]}" embedded_single_ms="${SMED[embedded]}" pgs3_single_ms="${SMED[pgs3]}" \
    local_txn_ms="${TMED[local]}" embedded_txn_ms="${TMED[embedded]}" pgs3_txn_ms="${TMED[pgs3]}"
