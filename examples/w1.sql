-- W1, the benchmark workload, in Flink SQL: per sensor, 10 s tumbling
-- event-time windows with a 2 s watermark bound; count, mean, min, max,
-- stddev; flag a window whose mean is more than 3 standard deviations from
-- an EWMA baseline (alpha 0.1) of that sensor's earlier window means.
-- The same plan as examples/w1.toml (same operator id, so the same state).
--
--   weir gen w1 --events 1000000 --seed 1 > w1.csv
--   weir replay --pipeline examples/w1.sql --input w1.csv --output windows.csv
SET 'pipeline.name' = 'w1';
SET 'weir.state.max-keys' = '10000';

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

SELECT
  sensor,
  window_start,
  window_end,
  COUNT(*) AS `count`,
  AVG(`value`) AS mean,
  MIN(`value`) AS `min`,
  MAX(`value`) AS `max`,
  STDDEV_POP(`value`) AS stddev,
  EWMA_Z(AVG(`value`), 0.1, 3.0, 5) AS anomaly
FROM TABLE(TUMBLE(TABLE sensors, DESCRIPTOR(rowtime), INTERVAL '10' SECOND))
GROUP BY sensor, window_start, window_end;
