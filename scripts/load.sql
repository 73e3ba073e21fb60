-- Demo workload for `make load`: run it against a quackfs mount, e.g.
--   duckdb /tmp/fuse/quickstart.duckdb < scripts/load.sql
-- Creates (or replaces) a 1M-row table, runs a few aggregates and checkpoints,
-- so the mount has synced data to commit (`quackfs commit -m "demo load"`).

CREATE OR REPLACE TABLE events AS
SELECT
    i AS id,
    TIMESTAMP '2024-01-01' + to_seconds(i * 30) AS ts,
    'user_' || (i % 1000) AS user_id,
    ['view', 'click', 'cart', 'purchase'][1 + i % 4] AS kind,
    (hash(i) % 100000) / 100.0 AS amount
FROM range(1000000) AS t(i);

SELECT count(*) AS events, count(DISTINCT user_id) AS users, round(sum(amount), 2) AS total_amount
FROM events;

SELECT kind, count(*) AS n, round(avg(amount), 2) AS avg_amount, max(amount) AS max_amount
FROM events
GROUP BY kind
ORDER BY kind;

SELECT date_trunc('month', ts) AS month, count(*) AS n, round(sum(amount), 2) AS amount
FROM events
GROUP BY ALL
ORDER BY month
LIMIT 12;

CHECKPOINT;
