"""Soak load for quackfs' bounded-memory test, through the Python duckdb module.

usage: soak.py DB small N     N single-row INSERT transactions (autocommit: one WAL fsync each)
       soak.py DB load ROWS   one large CTAS of ROWS rows of 96-character strings, CHECKPOINTed
Prints "ok SECONDS" when done.
"""
import sys
import time

import duckdb

db, phase, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.monotonic()
con = duckdb.connect(db)
if phase == "small":
    con.execute("CREATE TABLE IF NOT EXISTS small (k BIGINT, v VARCHAR)")
    for k in range(n):
        con.execute("INSERT INTO small VALUES (?, ?)", [k, f"row {k}"])
elif phase == "load":
    con.execute(
        "CREATE TABLE big AS SELECT range AS id, md5(range::VARCHAR) || md5((range * 7)::VARCHAR)"
        " || md5((range * 13)::VARCHAR) AS h FROM range(?)",
        [n],
    )
    con.execute("CHECKPOINT")
else:
    raise SystemExit(f"unknown phase {phase}")
con.close()
print(f"ok {time.monotonic() - t0:.1f}", flush=True)
