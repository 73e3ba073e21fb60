"""Commit-latency workloads for bench/commit_latency.sh, through the Python duckdb module.

usage: latency_driver.py DB setup ROWS      create table t (ROWS rows), CHECKPOINT
       latency_driver.py DB single N        N single-row autocommit INSERTs
       latency_driver.py DB txns N          N x (UPDATE 1000 rows + INSERT 100, COMMIT, CHECKPOINT)
Prints one line: the milliseconds of each transaction, space separated.
"""
import sys
import time

import duckdb

db, phase, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
con = duckdb.connect(db)
times = []
if phase == "setup":
    con.execute(
        "CREATE TABLE t AS SELECT range AS id, range % 1000 AS v, md5(range::VARCHAR) AS h FROM range(?)",
        [n],
    )
    con.execute("CHECKPOINT")
elif phase == "single":
    con.execute("CREATE TABLE IF NOT EXISTS s (k BIGINT, v VARCHAR)")
    con.execute("CHECKPOINT")
    for k in range(n):
        t0 = time.perf_counter()
        con.execute("INSERT INTO s VALUES (?, ?)", [k, "row"])
        times.append((time.perf_counter() - t0) * 1000)
elif phase == "txns":
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    for i in range(n):
        lo = (i * 7919) % max(rows - 1000, 1)
        t0 = time.perf_counter()
        con.execute("BEGIN")
        con.execute("UPDATE t SET v = v + 1 WHERE id BETWEEN ? AND ?", [lo, lo + 999])
        con.execute(
            "INSERT INTO t SELECT range + ?, 0, 'new' FROM range(100)", [rows + i * 100]
        )
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
        times.append((time.perf_counter() - t0) * 1000)
else:
    raise SystemExit(f"unknown phase {phase}")
con.close()
print(" ".join(f"{t:.3f}" for t in times))
