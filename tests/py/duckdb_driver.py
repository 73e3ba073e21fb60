"""Drives the Python duckdb module for quackfs' tests: one JSON request per line on stdin, one
JSON answer per line on stdout. Connections stay open between requests (a real client's life:
transactions, checkpoints and close happen when the test says so).

Requests: {"op": "open", "db": PATH, "read_only": false}
          {"op": "sql", "db": PATH, "sql": "..."}       -> {"ok": true, "rows": [[...], ...]}
          {"op": "close", "db": PATH}                    (a no-op if it is not open)
          {"op": "version"}                              -> {"ok": true, "rows": [["1.4.4"]]}
Errors answer {"ok": false, "error": "..."}; the driver keeps going.
"""
import json
import sys

import duckdb

conns = {}


def handle(req):
    op = req["op"]
    if op == "version":
        return [[duckdb.__version__]]
    db = req["db"]
    if op == "open":
        conns[db] = duckdb.connect(db, read_only=req.get("read_only", False))
        return []
    if op == "close":
        con = conns.pop(db, None)
        if con is not None:
            con.close()
        return []
    if op == "sql":
        con = conns.get(db)
        if con is None:
            con = conns[db] = duckdb.connect(db)
        cur = con.execute(req["sql"])
        try:
            rows = cur.fetchall()
        except duckdb.InvalidInputException:
            rows = []
        return [[str(v) for v in row] for row in rows]
    raise ValueError(f"unknown op {op!r}")


for line in sys.stdin:
    try:
        out = {"ok": True, "rows": handle(json.loads(line))}
    except Exception as e:  # noqa: BLE001 - every failure is reported to the test
        out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
