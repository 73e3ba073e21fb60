#!/usr/bin/env bash
# Benchmark: `diff --rows` on a large database where one table changed, against scanning both
# sides in full (`--scan-all`), in the same run (issue "Row-level history").
#
#   bash bench/rows_diff.sh      (from the repository root; see bench/README.md)
#
# Builds a database of BENCH_ROWS_TABLES (8) tables of BENCH_ROWS_PER_TABLE (4,000,000) rows each
# (about 1 GB with the default sizes) with the duckdb CLI, imports it into an embedded quackfs,
# changes 1,000 rows of one table and imports that as a second commit, then times
# `quackfs diff --rows` (unchanged tables skipped) and `quackfs diff --rows --scan-all`, both
# with cold page caches where they can be dropped. Both must report the same changes.
set -euo pipefail

BENCH_NAME=rows_diff
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TABLES=${BENCH_ROWS_TABLES:-8}
ROWS=${BENCH_ROWS_PER_TABLE:-4000000}
resolve_quackfs
setup_workdir
trap_mounts
probe_drop_caches
DUCKDB=${DUCKDB:-duckdb}

export QUACKFS_HOME=$WORK/home
DB=$WORK/in/big.duckdb
mkdir -p "$WORK/in"
log "building $TABLES tables x $ROWS rows"
SQL=""
for i in $(seq 1 "$TABLES"); do
    SQL+="CREATE TABLE t$i(id BIGINT PRIMARY KEY, a VARCHAR, b DOUBLE, c BIGINT);
INSERT INTO t$i SELECT range, md5(range::VARCHAR), range / 3.0, (hash(range) >> 1)::BIGINT FROM range($ROWS);
"
done
"$DUCKDB" "$DB" -c "$SQL CHECKPOINT;" >/dev/null
SIZE=$(stat -c %s "$DB")
"$QUACKFS" init big --import "$DB" >/dev/null 2>&1
"$DUCKDB" "$DB" -c "UPDATE t3 SET a = 'changed' WHERE id % 4000 = 0; CHECKPOINT;" >/dev/null
"$QUACKFS" -r big import "$DB" >/dev/null 2>&1

run_diff() { # OUTFILE [ARGS…]
    local out=$1
    shift
    drop_caches
    timed "$QUACKFS" -r big --json diff main~1 main --rows "$@"
    cp "$WORK/last.out" "$out"
}
log "diff --rows"
run_diff "$WORK/skip.json"
T_SKIP=$T_REAL
log "diff --rows --scan-all"
run_diff "$WORK/all.json" --scan-all
T_ALL=$T_REAL
"$PYTHON" - "$WORK/skip.json" "$WORK/all.json" <<'EOF'
import json, sys
a, b = (json.load(open(p))["rows"][0] for p in sys.argv[1:3])
key = lambda t: (t["table"], t["inserted"], t["deleted"], t["updated"])
assert [key(t) for t in a["tables"]] == [key(t) for t in b["tables"]], (a, b)
assert a["tables"][0]["updated"] == 1000, a
print("tables changed: %d, skipped: %d (of %d)" % (len(a["tables"]), len(a["skipped"]), len(a["tables"]) + len(a["skipped"]) + len(a["unchanged"])))
EOF
machine_info
echo "database: $(mib "$SIZE"), $TABLES tables x $ROWS rows, 1000 rows of one table updated"
echo "diff --rows:            ${T_SKIP} s"
echo "diff --rows --scan-all: ${T_ALL} s"
echo "ratio: $(ratio "$T_SKIP" "$T_ALL")x of a full scan of both sides"
append_result bench=rows_diff bytes="$SIZE" skip_s="$T_SKIP" scan_all_s="$T_ALL"
