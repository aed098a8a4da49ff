-- W1 (docs/w1.md) computed by the keyed WebAssembly function of
-- examples/functions/w1, called from SQL as a table function: the same
-- plan as examples/w1_wasm.toml (operator `w1`, the same config, so the
-- same state and checkpoints) and the same rows.
--
--   examples/functions/build.sh          # needs wasm32-unknown-unknown
--   weir gen w1 --events 1000000 --seed 1 > w1.csv
--   weir replay --pipeline examples/w1_wasm.sql --input w1.csv --output windows.csv
SET 'pipeline.name' = 'w1';
SET 'weir.state.max-keys' = '10000';

CREATE FUNCTION w1 AS 'functions/wasm/w1.wasm' LANGUAGE WASM;

-- Input rows: sensor,ts_ms,value (no header)
CREATE TABLE sensors (
  sensor STRING,
  ts BIGINT,
  `value` DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '2' SECOND
) WITH (
  'connector' = 'filesystem',
  'path' = 'w1.csv',
  'format' = 'csv'
);

-- The function keeps its own 10 s windows (event-time timers) and EWMA
-- baseline; its window rows are the query's rows.
SELECT sensor, window_start, window_end, `count`, mean, `min`, `max`, stddev, anomaly
FROM TABLE(w1(
  TABLE sensors PARTITION BY sensor,
  DESCRIPTOR(rowtime),
  DESCRIPTOR(`value`),
  COLUMNS => DESCRIPTOR(`count`, mean, `min`, `max`, stddev),
  FLAG => TRUE,
  SEES_LATE => TRUE,
  size => 10000, alpha => 0.1, k => 3.0, warmup => 5
));
