"""Reopen a TPC-H database and run five queries (PRAGMA tpch 1, 3, 5, 6, 10), read-only.

usage: tpch_queries.py DB      prints the seconds the whole took (open + queries + close)
"""
import sys
import time

import duckdb
import duckdb_ext

t = time.perf_counter()
con = duckdb.connect(sys.argv[1], read_only=True)
duckdb_ext.init(con)
con.load_extension("tpch")
for q in (1, 3, 5, 6, 10):
    assert con.execute(f"PRAGMA tpch({q})").fetchall(), q
con.close()
print(f"{time.perf_counter() - t:.3f}")
