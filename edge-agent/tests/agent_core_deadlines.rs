//! [`AgentCore`] driven only at its `poll_timeout`: an idle
//! processing-time pipeline commits once per window end that is due and
//! not otherwise (no tick a second), and its windows fire on time without
//! a message to carry them. Virtual time; the commits and ticks are
//! counted, nothing is timed.

use weir_agent::gateway::OutputFormat;
use weir_agent::pipeline_file;
use weir_agent::run::agent_core::{Action, AgentCore, CoreConfig};
use weir_agent::run::mqtt::Link;
use weir_agent::store::backend::SimDisk;
use weir_agent::store::{Store, StoreConfig};

const PIPELINE: &str = r#"
name = "idle"

[time]
mode = "processing"

[[source]]
name = "dev"
fields = ["v"]

[source.mqtt]
topics = ["idle/dev/+"]
qos = 1
decode = { format = "json", key_from_topic = 2 }

[[window]]
id = "w"
source = "dev"
field = "v"
kind = "tumbling"
size = "10s"
aggregates = ["count", "sum"]
"#;

/// The driver's clock at the start (a multiple of the window size).
const T0: i64 = 1_780_000_000_000;

struct Driver {
    core: AgentCore<u64>,
    now: i64,
    ticks: u64,
    windows: u64,
}

impl Driver {
    fn drain(&mut self) {
        while let Some(a) = self.core.poll_action() {
            if let Action::Publish(_) = a {
                self.windows += 1;
                self.core.handle_puback();
            }
        }
    }

    /// Ticks at every deadline the core names up to `until`, and only then.
    fn run_until(&mut self, until: i64) {
        while let Some(t) = self.core.poll_timeout().filter(|t| *t <= until) {
            self.now = self.now.max(t);
            self.core.handle_tick(self.now).unwrap();
            self.ticks += 1;
            self.drain();
        }
        self.now = self.now.max(until);
    }
}

#[test]
fn an_idle_processing_time_pipeline_commits_only_at_window_ends() {
    let pf = pipeline_file::parse("idle.toml", PIPELINE).unwrap();
    let cfg = CoreConfig {
        gateway: "gw".into(),
        prefix: "weir".into(),
        format: OutputFormat::Json,
        publish_windows: true,
        commit_ms: 50,
        group_records: 100,
        checkpoint_ms: 60_000,
    };
    let store = Store::open_backend(SimDisk::new(), "d/weir.redb", StoreConfig::default()).unwrap();
    let core = AgentCore::open(cfg, pf, store).unwrap();
    let mut d = Driver {
        core,
        now: T0,
        ticks: 0,
        windows: 0,
    };
    d.core.handle_connected(T0, Link::Ingest, false).unwrap();
    d.core.handle_connected(T0, Link::Output, false).unwrap();
    d.drain();
    d.core.handle_tick(T0).unwrap();
    d.drain();
    // A message a second for 25 s: windows [0, 10 s), [10 s, 20 s) close
    // with the data; [20 s, 30 s) is open when the data stops.
    for i in 0..25u64 {
        d.run_until(T0 + i as i64 * 1_000);
        d.core
            .handle_publish(d.now, "idle/dev/a", br#"{"v":1}"#, Some(i))
            .unwrap();
        d.drain();
    }
    d.run_until(T0 + 25_000);
    assert_eq!(d.windows, 2);
    let (commits, ticks) = (d.core.stats().commits, d.ticks);
    // Ten idle minutes.
    d.run_until(T0 + 625_000);
    assert_eq!(d.windows, 3, "the open window fired without a message");
    let c = d.core.stats();
    assert_eq!(c.commits - commits, 1, "one commit: the window end's tick");
    // That tick and the checkpoints (one a minute), no tick a second.
    assert!(
        d.ticks - ticks <= 1 + 11,
        "{} ticks in ten idle minutes",
        d.ticks - ticks
    );
    assert!(c.checkpoints >= 9, "{c:?}");
    assert_eq!(c.readings, 25);
}
