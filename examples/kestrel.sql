-- Alerts from weir's Kestrel detector, one per anomalous reading, for a
-- technician's phone: every pump's vibration is scored sample by sample
-- (event-time order, per pump), and only the readings its alert gate flags
-- go out on plant/alerts. `weir check examples/kestrel.sql`; `weir run`
-- with `pipeline = "kestrel.sql"` in gateway.toml.
SET 'pipeline.name' = 'vibration_alerts';

CREATE TABLE vibration (
  pump STRING,
  ts BIGINT,
  rms DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '2' SECOND
) WITH (
  'connector' = 'mqtt',
  'topic' = 'plant/+/vibration',
  'format' = 'json'
);

CREATE TABLE alerts (pump STRING, at_ms BIGINT, rms DOUBLE, score DOUBLE)
  WITH ('connector' = 'mqtt', 'topic' = 'plant/alerts');

-- kestrel_banded: Kestrel's ranking, alarms only for events rare under the
-- pump's own past (docs/detectors.md); cooldown: samples kept quiet after
-- an alert.
INSERT INTO alerts
SELECT pump, rowtime, rms, score
FROM TABLE(KESTREL_BANDED(
  TABLE vibration PARTITION BY pump,
  DESCRIPTOR(rowtime),
  DESCRIPTOR(rms),
  cooldown => 100
))
WHERE anomaly;
