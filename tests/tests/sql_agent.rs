//! `weir run` with a Flink SQL pipeline: the agent subscribes to the MQTT
//! table's topic, decodes with the table's columns, and publishes the
//! windows an uninterrupted engine computes for the same plan.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;

/// The end-to-end pipeline (`weir_e2e::PIPELINE`) in SQL.
const SQL: &str = "SET 'pipeline.name' = 'w';
CREATE TABLE s (
  k STRING, t BIGINT, v DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(t, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '2' SECOND
) WITH ('connector' = 'mqtt', 'topic' = 'plant/+/v', 'qos' = '1', 'format' = 'json');
SELECT k, window_start, window_end, COUNT(*) AS n, AVG(v) AS mean, MIN(v) AS lo,
       MAX(v) AS hi, STDDEV_POP(v) AS sd, EWMA_Z(AVG(v), 0.1, 3.0, 5) AS anomaly
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;
";

#[test]
fn the_agent_runs_a_sql_pipeline() {
    // The SQL builds the TOML pipeline's operators (names aside).
    let sql = weir_agent::pipeline_file::parse("p.sql", SQL).expect("sql");
    let toml = weir_agent::pipeline_file::parse("p.toml", PIPELINE).expect("toml");
    assert_eq!(sql.spec.operators[0].kind, toml.spec.operators[0].kind);
    assert_eq!(sql.spec.operators[0].id, toml.spec.operators[0].id);

    let addr = weir_agent::demo::start_broker().expect("broker");
    let dir = TempDir::new("sql-agent");
    let gw = gateway_file(&dir.0, addr, "");
    std::fs::write(dir.0.join("pipeline.sql"), SQL).unwrap();
    let text = std::fs::read_to_string(&gw).unwrap();
    std::fs::write(&gw, text.replace("pipeline.toml", "pipeline.sql")).unwrap();

    let msgs = input(20_000, 4, T0);
    let expected = reference(SQL, &msgs);
    assert!(expected.len() > 20, "the input must fire windows");
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    let agent = InProcAgent::start(&gw);
    agent.wait_subscribed(0);
    publish_all(addr, &msgs, Duration::from_secs(120));
    assert!(
        col.wait_for(expected.len(), Duration::from_secs(120)),
        "only {} of {} outputs arrived",
        col.distinct(),
        expected.len()
    );
    wait_until(Duration::from_secs(60), "every reading journaled", || {
        agent.metrics().readings.load(Relaxed) == msgs.len() as u64
    });
    let s = agent.stop();
    assert_eq!(s.readings, msgs.len() as u64);
    col.assert_matches(&expected);
}
