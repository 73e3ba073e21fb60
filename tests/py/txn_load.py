"""A DuckDB load for crash tests: transactions numbered from START, each inserting ROWS(k) rows
with value k into table t, committed one by one through the Python duckdb module. After each
COMMIT returns it prints "committed K" (flushed), so the test knows exactly which transactions
DuckDB reported durable before the mount was killed. Every fifth transaction is large (its rows go
straight into the database file), every seventh is followed by a CHECKPOINT.

usage: txn_load.py DB START COUNT
"""
import sys

import duckdb

db, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def rows(k):
    return 150_000 if k % 5 == 0 else 50 + k % 200


con = duckdb.connect(db)
con.execute("CREATE TABLE IF NOT EXISTS t (k BIGINT, pad VARCHAR)")
for k in range(start, start + count):
    con.execute("BEGIN")
    con.execute(
        "INSERT INTO t SELECT ?, md5((range + ?)::VARCHAR) FROM range(?)", [k, k, rows(k)]
    )
    con.execute("COMMIT")
    print(f"committed {k}", flush=True)
    if k % 7 == 0:
        con.execute("CHECKPOINT")
con.close()
print("done", flush=True)
