//! `weir demo`: the whole gateway on one machine, with nothing to set up.
//!
//! An embedded MQTT broker (rumqttd) on a free loopback port, four
//! simulated pumps publishing vibration and bearing temperature (pump-3's
//! bearing starts to fail after two and a half minutes of simulated time), the
//! real agent (`weir run`'s code, journal and checkpoints in a temporary
//! folder) with `examples/demo.toml`, and a viewer subscribed to the
//! agent's outputs that prints each window and alert as it arrives.
//!
//! [`start_broker`] is also what the end-to-end tests use.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// The demo's pipeline.
pub const PIPELINE: &str = include_str!("../../examples/demo.toml");

/// Starts an in-process rumqttd broker on a free loopback port and returns
/// its address once it accepts connections.
///
/// rumqttd does not report the port it bound, so a port is found by
/// binding `127.0.0.1:0` and closing it again; another process could take
/// it in between (a small race, retried once with a new port).
///
/// # Errors
/// No port could be bound, or the broker did not come up.
pub fn start_broker() -> std::io::Result<SocketAddr> {
    // Never the same port twice in a process: brokers started in parallel
    // (tests) could otherwise be handed one just released by another.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut last = None;
    for _ in 0..3 {
        let port = loop {
            let p = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
            if !given.contains(&p) {
                given.push(p);
                break p;
            }
        };
        match start_broker_at(SocketAddr::from(([127, 0, 0, 1], port))) {
            Ok(a) => return Ok(a),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the embedded broker did not start")))
}

/// Starts an in-process rumqttd broker on `addr` and returns once it
/// accepts connections (at most about 2 s).
///
/// # Errors
/// It did not come up (the port is taken, for one).
pub fn start_broker_at(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let config = broker_config(addr);
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut b = rumqttd::Broker::new(config);
            if let Err(e) = b.start() {
                tracing::error!("embedded broker stopped: {e}");
            }
        })?;
    // Wait (bounded) until it accepts: the listener is bound in its thread.
    let mut last = None;
    for _ in 0..200 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(_) => return Ok(addr),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the embedded broker did not start")))
}

fn broker_config(addr: SocketAddr) -> rumqttd::Config {
    use std::collections::HashMap;
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: 1 << 20,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let router = rumqttd::RouterConfig {
        max_connections: 1_000,
        max_outgoing_packet_count: 1_000,
        max_segment_size: 64 << 20,
        max_segment_count: 16,
        ..Default::default()
    };
    rumqttd::Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    }
}

/// A small deterministic generator (xorshift64*), with gaussians.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn gauss(&mut self) -> f64 {
        let u = self.next().max(1e-12);
        let v = self.next();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// One simulated pump.
struct Pump {
    name: String,
    base_g: f64,
    temp: f64,
    /// Simulated ms after the start when its bearing starts to fail.
    fault_at: Option<i64>,
}

impl Pump {
    /// Vibration (g) and bearing temperature (°C) at `t` ms after the start.
    fn sample(&self, t: i64, rng: &mut Rng) -> (f64, f64) {
        let mut vib = self.base_g * rng.gauss();
        let mut temp = self.temp + 0.05 * rng.gauss() + 0.3 * ((t as f64) / 600_000.0).sin();
        if let Some(f) = self.fault_at.filter(|&f| t >= f) {
            // A spalled race: impacts at the defect frequency, growing.
            let severity = (((t - f) as f64) / 60_000.0).min(3.0) + 0.5;
            if rng.next() < 0.08 {
                vib += severity * (1.0 + rng.gauss().abs());
            }
            vib *= 1.0 + 0.3 * severity;
            temp += 4.0 * severity;
        }
        (vib, temp)
    }
}

fn parse_for(s: &str) -> anyhow::Result<Duration> {
    crate::pipeline_file::parse_duration(s, weir_core::time::TimeUnit::Millis)
        .map(|ms| Duration::from_millis(ms as u64))
        .with_context(|| format!("--for {s}: write a duration like 30s, 2m or 1h"))
}

/// Runs the demo (`weir demo`).
///
/// # Errors
/// The broker or the agent could not start.
pub fn main(
    duration: Option<&str>,
    speed: u32,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<std::process::ExitCode> {
    let duration = duration.map(parse_for).transpose()?;
    let speed = speed.clamp(1, 1_000) as i64;
    crate::cli::init_logging_filter("warn,rumqttd=off");
    let broker = start_broker().context("cannot start the embedded MQTT broker")?;
    let tmp;
    let dir = match data_dir {
        Some(d) => d,
        None => {
            tmp = std::env::temp_dir().join(format!("weir-demo-{}", std::process::id()));
            tmp.clone()
        }
    };
    crate::fsutil::create_dir_all(&dir, 0o700)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let gw_text = format!(
        "id = \"demo\"\ndata_dir = {:?}\n[broker]\nurl = \"mqtt://{broker}\"\n[journal]\ngroup_commit = \"20ms\"\n[checkpoint]\ninterval = \"5s\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        dir.display().to_string()
    );
    let cfg = crate::gateway::parse("demo gateway", &gw_text, &dir)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut pf = crate::pipeline_file::parse("examples/demo.toml", PIPELINE)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The simulated pumps' clocks run `speed` times faster than the
    // gateway's: the future guard would refuse them after a few seconds.
    for s in &mut pf.spec.sources {
        s.max_ahead = None;
    }
    println!(
        "weir demo: broker on mqtt://{broker}, data in {}",
        dir.display()
    );
    println!(
        "  4 pumps publish vibration and bearing temperature on demo/pumps/<pump>/telemetry, {speed}x real time;"
    );
    println!("  pump-3's bearing starts to fail after 150 s of simulated time. Ctrl-C stops.\n");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let summary = rt.block_on(async move {
        let (htx, hrx) = tokio::sync::oneshot::channel();
        let agent = tokio::spawn(crate::run::run_async(cfg, pf, move |h| {
            let _ = htx.send(h);
        }));
        let handle = hrx.await.context("the agent stopped before it started")?;
        if let Some(a) = handle.metrics_addr {
            let token = handle
                .metrics
                .dash
                .token
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match token {
                Some(t) => println!("  dashboard: http://{a}/#token={t}"),
                None => println!("  dashboard: http://{a}/"),
            }
            println!("  metrics:   http://{a}/metrics\n");
        }
        let viewer = tokio::spawn(view(broker, speed));
        let sim = tokio::spawn(simulate(broker, speed));
        let stop = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        stop.await;
        sim.abort();
        // Let the last group commit and its outputs go out.
        tokio::time::sleep(Duration::from_millis(300)).await;
        handle.stop();
        let s = agent.await??;
        viewer.abort();
        let m = &handle.metrics;
        println!(
            "\nweir demo: {} readings, {} windows, {} alerts, {} checkpoints, {} dead letters",
            s.readings,
            m.windows.load(Relaxed),
            m.alerts.load(Relaxed),
            m.checkpoints.load(Relaxed),
            m.dead_letters.load(Relaxed)
        );
        anyhow::Ok(s)
    })?;
    let _ = summary;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn simulate(broker: SocketAddr, speed: i64) {
    let mut o = MqttOptions::new(
        format!("weir-demo-sim-{}", std::process::id()),
        broker.ip().to_string(),
        broker.port(),
    );
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut el) = AsyncClient::new(o, 10_000);
    tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let pumps: Vec<Pump> = (1..=4)
        .map(|i| Pump {
            name: format!("pump-{i}"),
            base_g: 0.2 + 0.05 * i as f64,
            temp: 38.0 + 2.0 * i as f64,
            fault_at: (i == 3).then_some(150_000),
        })
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let started = tokio::time::Instant::now();
    const PERIOD_MS: i64 = 50; // 20 Hz per pump
    let mut sim_ms = 0i64;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        let target = started.elapsed().as_millis() as i64 * speed;
        while sim_ms < target {
            for p in &pumps {
                let (vib, temp) = p.sample(sim_ms, &mut rng);
                let payload = format!(
                    "{{\"ts\":{},\"vib\":{vib:.4},\"temp\":{temp:.3}}}",
                    t0 + sim_ms
                );
                let topic = format!("demo/pumps/{}/telemetry", p.name);
                if client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            sim_ms += PERIOD_MS;
        }
    }
}

async fn view(broker: SocketAddr, speed: i64) {
    let mut o = MqttOptions::new(
        format!("weir-demo-view-{}", std::process::id()),
        broker.ip().to_string(),
        broker.port(),
    );
    o.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 100);
    let _ = client.subscribe("weir/demo/#", QoS::AtLeastOnce).await;
    let mut t0: Option<i64> = None;
    let mut seen = std::collections::HashSet::new();
    loop {
        let p = match el.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => p,
            Ok(_) => continue,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
            continue;
        };
        let alert = p.topic.contains("/alerts/");
        let id = v["id"].as_str().unwrap_or("").to_string();
        // A window that is also an alert arrives twice: print it once.
        if !seen.insert((id, alert)) || (!alert && v["anomaly"] == true) {
            continue;
        }
        let start = v["start"].as_i64().unwrap_or(0);
        let t = start - *t0.get_or_insert(start);
        let key = v["key"].as_str().unwrap_or("?");
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let stamp = format!("{:>3}:{:02}", t / 60_000, (t / 1000) % 60);
        let line = match v["op"].as_str() {
            Some("vibration") => format!(
                "{stamp}  {key:<7} vibration  rms {:.3} g  max {:.2} g  kurtosis {:>5.1}  crest {:>4.1}",
                f("rms"),
                f("max"),
                f("kurtosis"),
                f("crest")
            ),
            Some("temperature") => format!(
                "{stamp}  {key:<7} bearing    mean {:.1} °C  max {:.1} °C",
                f("mean"),
                f("max")
            ),
            _ => continue,
        };
        if alert {
            println!("{line}   <<< ALERT: {key} left its baseline");
        } else {
            println!("{line}");
        }
        let _ = speed;
    }
}
