//! Sensors wired to the gateway (a board profile's I2C/SPI parts; here the
//! `sim` board's simulated ADXL345, BME280 and INA219 behind the real
//! drivers) feed `weir run`'s pipeline beside MQTT, stamped by the gateway
//! clock, journaled like any sample, with their health in `/metrics`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use weir_e2e::*;

const PIPELINE_SIM: &str = r#"
name = "sim-board"
[[source]]
name = "vibration"
fields = ["x", "y", "z"]
max_out_of_orderness = "100ms"
[[source]]
name = "environment"
fields = ["temperature", "pressure", "humidity"]
[[source]]
name = "power"
fields = ["bus_voltage", "current"]
[[window]]
id = "vib_rms"
source = "vibration"
field = "z"
kind = "tumbling"
size = "500ms"
aggregates = ["count", "rms", "max", "kurtosis"]
"#;

#[test]
fn wired_sensors_of_the_sim_board_feed_the_pipeline() {
    let addr = weir_agent::demo::start_broker().expect("broker");
    let dir = TempDir::new("wired");
    let board = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards/sim/board.toml");
    let gw = gateway_file(&dir.0, addr, "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    // Point the gateway at the board and a pipeline with its sources.
    let text = std::fs::read_to_string(&gw).unwrap().replacen(
        "pipeline = \"pipeline.toml\"",
        &format!(
            "pipeline = \"sim.toml\"\nboard = {:?}",
            board.display().to_string()
        ),
        1,
    );
    std::fs::write(&gw, text).unwrap();
    std::fs::write(dir.0.join("sim.toml"), PIPELINE_SIM).unwrap();
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    let agent = InProcAgent::start(&gw);
    // Two 100 Hz accelerometers: a 500 ms window every half second each.
    assert!(
        col.wait_for(4, Duration::from_secs(30)),
        "only {} windows from the wired sensors",
        col.distinct()
    );
    let m = agent.metrics();
    assert!(m.wired_readings.load(Relaxed) > 100);
    assert!(m.readings.load(Relaxed) > 0);
    let text = m.render();
    assert!(
        text.contains("pump-1-vibration"),
        "sensor health in /metrics:\n{text}"
    );
    assert!(col.wait_for(8, Duration::from_secs(30)));
    col.with(|s| {
        let all: Vec<serde_json::Value> = s
            .by_id
            .values()
            .map(|p| serde_json::from_slice(p).unwrap())
            .collect();
        for v in &all {
            assert!(v["key"].as_str().unwrap().ends_with("-vibration"), "{v}");
            // 100 Hz for 500 ms, give or take a tick; a key's first window
            // began when the agent started, so it may be partial.
            let first = all
                .iter()
                .filter(|w| w["key"] == v["key"])
                .map(|w| w["start"].as_i64().unwrap())
                .min();
            let n = v["count"].as_u64().unwrap();
            if Some(v["start"].as_i64().unwrap()) != first {
                assert!((45..=55).contains(&n), "{v}");
            }
        }
    });
    agent.stop();
}
