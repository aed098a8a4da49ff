//! Benchmark of `weir run` end to end through Debian's mosquitto on
//! loopback (run by `bench/agent.sh`, which builds the release `weir`).
//!
//! Prints, each beside its reference measured in the same run:
//! 1. readings/s of W1-style JSON readings (one per message, QoS 1) through
//!    the agent with the journal on, against the broker's own ceiling: the
//!    same publisher with a plain QoS 1 subscriber and no weir;
//! 2. readings/s with SenML packs of 100 readings per message;
//! 3. the agent's peak RSS with 1,000 sensors;
//! 4. flash bytes written per reading (`/proc/<pid>/io` `write_bytes`)
//!    against the payload bytes per reading;
//! 5. recovery of a journal of `--recover-readings` readings over 10,000
//!    keys after a SIGKILL (time to "recovered" in the agent's log);
//! 6. the flash write budget: a steady plant (`--steady-rate` readings/s,
//!    default 1,000) for `--steady-secs` (default 30) after a warm-up of
//!    two budget windows, without a budget and with `--budget` (default
//!    the SD card default, 2GiB a day): device bytes the store wrote
//!    (`weir_storage_bytes_written_total`) per reading and per payload
//!    byte, syncs per reading, the commit interval in use, and the
//!    acknowledgement wait (`weir_ack_wait_seconds`: from a group's first
//!    message to its commit, an upper bound for each message: its mean,
//!    and the bucket bound at p50 and p99), through the bench broker
//!    (in-flight window 1,000) and through one without an in-flight limit.
//!
//! `agent_bench --weir PATH [--weir-board PATH] [--readings N] [--rounds R]
//! [--recover-readings M] [--group-commit 50ms] [--steady-rate R]
//! [--steady-secs S] [--budget 2GiB] [--only-budget] [--only-senml]
//! [--only-rss] [--smaps PREFIX] [--only-recovery] [--recover-rounds R]
//! [--weir-compare PATH] [--keep-store DIR]` (group commit
//! default: the rpi4 board profile's 50 ms). `--weir-board` is the gateway build
//! (`--profile board --no-default-features`, static musl from
//! bench/agent.sh), measured for RSS as well.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use weir_e2e::{free_port, Mosquitto, TempDir};

const T0: i64 = 1_700_000_000_000;

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

/// W1-like JSON readings over `keys` sensors, `per_ms` readings a ms.
fn json_messages(n: usize, keys: usize, per_ms: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let k = i % keys;
            let v = 20.0 + ((i * 7919) % 1000) as f64 / 100.0;
            (
                format!("plant/s{k:04}/v"),
                format!(
                    "{{\"k\":\"s{k:04}\",\"t\":{},\"v\":{v:.2}}}",
                    T0 + (i / per_ms) as i64
                )
                .into_bytes(),
            )
        })
        .collect()
}

/// SenML packs of `per` readings (`bn` = sensor, `bt` = time).
fn senml_messages(n: usize, keys: usize, per: usize) -> Vec<(String, Vec<u8>)> {
    (0..n / per)
        .map(|m| {
            let k = m % keys;
            let mut s = format!(
                "[{{\"bn\":\"s{k:04}:\",\"bt\":{}",
                (T0 + (m * per) as i64) as f64 / 1000.0
            );
            for j in 0..per {
                let v = 20.0 + (((m * per + j) * 7919) % 1000) as f64 / 100.0;
                if j == 0 {
                    s.push_str(&format!(",\"n\":\"v\",\"v\":{v:.2}}}"));
                } else {
                    s.push_str(&format!(
                        ",{{\"n\":\"v\",\"t\":{:.3},\"v\":{v:.2}}}",
                        j as f64 / 1000.0
                    ));
                }
            }
            s.push(']');
            (format!("pack/s{k:04}"), s.into_bytes())
        })
        .collect()
}

const PIPELINE_JSON: &str = r#"
name = "bench"
[state]
max_keys = 20000
[[source]]
name = "s"
fields = ["v"]
max_out_of_orderness = "2s"
[source.mqtt]
topics = ["plant/+/v"]
qos = 1
decode = { format = "json", key = "k", ts = "t", ts_unit = "ms" }
[[window]]
id = "w"
source = "s"
field = "v"
kind = "tumbling"
size = "10s"
aggregates = ["count", "mean", "min", "max", "stddev"]
detect = { on = "mean", kind = "ewma_z", alpha = 0.1, k = 3.0, warmup = 5 }
"#;

const PIPELINE_SENML: &str = r#"
name = "bench-senml"
[state]
max_keys = 20000
[[source]]
name = "s"
fields = ["v"]
max_out_of_orderness = "2s"
[source.mqtt]
topics = ["pack/+"]
qos = 1
decode = { format = "senml_json" }
[[window]]
id = "w"
source = "s"
field = "v"
kind = "tumbling"
size = "10s"
aggregates = ["count", "mean", "min", "max", "stddev"]
"#;

/// Publishes everything at QoS 1 as fast as the broker takes it.
async fn publish(addr: SocketAddr, msgs: &[(String, Vec<u8>)]) {
    let mut o = MqttOptions::new(
        format!("bench-pub-{}", free_port()),
        "127.0.0.1",
        addr.port(),
    );
    o.set_inflight(1000)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_keep_alive(Duration::from_secs(30));
    let (c, mut el) = AsyncClient::new(o, 10_000);
    let n = msgs.len();
    let owned: Vec<_> = msgs.to_vec();
    let pubber = tokio::spawn(async move {
        for (t, p) in owned {
            c.publish(t, QoS::AtLeastOnce, false, p)
                .await
                .expect("publish");
        }
        c
    });
    let mut acked = 0;
    while acked < n {
        match el.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("publisher: {e}"),
        }
    }
    let c = pubber.await.expect("publisher task");
    let _ = c.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(200), el.poll()).await;
}

/// The broker's ceiling: the same publisher, a plain QoS 1 subscriber.
fn ceiling(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    msgs: &[(String, Vec<u8>)],
    filter: &str,
) -> f64 {
    rt.block_on(async {
        let mut o = MqttOptions::new(
            format!("bench-sub-{}", free_port()),
            "127.0.0.1",
            addr.port(),
        );
        o.set_max_packet_size(1 << 20, 1 << 20)
            .set_keep_alive(Duration::from_secs(30));
        let (c, mut el) = AsyncClient::new(o, 100);
        c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        loop {
            if let Ok(Event::Incoming(Packet::SubAck(_))) = el.poll().await {
                break;
            }
        }
        let n = msgs.len();
        let t0 = Instant::now();
        let sub = tokio::spawn(async move {
            let mut got = 0;
            while got < n {
                if let Ok(Event::Incoming(Packet::Publish(_))) = el.poll().await {
                    got += 1;
                }
            }
            t0.elapsed()
        });
        publish(addr, msgs).await;
        let el = sub.await.unwrap();
        let _ = c.disconnect().await;
        n as f64 / el.as_secs_f64()
    })
}

struct Agent {
    child: Child,
    metrics: SocketAddr,
    log: PathBuf,
}

fn start_agent(
    weir: &Path,
    dir: &Path,
    broker: SocketAddr,
    pipeline: &str,
    tag: &str,
    extra: &str,
) -> Agent {
    // The rpi4 board profile's group commit (an SD card wants few commits).
    let gc = arg("--group-commit").unwrap_or_else(|| "50ms".into());
    std::fs::write(dir.join("pipeline.toml"), pipeline).unwrap();
    let mport = free_port();
    let gw = dir.join("gateway.toml");
    std::fs::write(
        &gw,
        format!(
            "id = \"bench-{tag}\"\npipeline = \"pipeline.toml\"\ndata_dir = \"data\"\n[broker]\nurl = \"mqtt://{broker}\"\ninflight = 1000\n[journal]\ngroup_commit = \"{gc}\"\ngroup_records = 4000\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n{extra}"
        ),
    )
    .unwrap();
    let log = dir.join(format!("agent-{tag}.log"));
    let child = Command::new(weir)
        .args(["run", "--config"])
        .arg(&gw)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start weir");
    let metrics = SocketAddr::from(([127, 0, 0, 1], mport));
    let a = Agent {
        child,
        metrics,
        log,
    };
    a.wait_log("connected", Duration::from_secs(60));
    a
}

impl Agent {
    fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            let s = std::fs::read_to_string(&self.log).unwrap_or_default();
            if s.contains(needle) {
                return s;
            }
            assert!(Instant::now() < end, "agent log lacks `{needle}`:\n{s}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let Ok(mut s) = std::net::TcpStream::connect(self.metrics) else {
            return 0.0;
        };
        let _ = write!(s, "GET /metrics HTTP/1.1\r\n\r\n");
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        r.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    fn proc_field(&self, file: &str, key: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/{file}", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    /// CPU seconds (user + system) the agent has used so far (Linux
    /// `/proc/<pid>/stat`, in clock ticks of 1/100 s).
    fn cpu_secs(&self) -> f64 {
        let s =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime and
        // stime are the 12th and 13th.
        let rest = s.rsplit_once(')').map_or("", |x| x.1);
        let f: Vec<f64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|x| x.parse().ok())
            .collect();
        f.iter().sum::<f64>() / 100.0
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Readings/s through the agent: from the first publish until the agent
/// has journaled and processed every reading.
fn through_agent(
    rt: &tokio::runtime::Runtime,
    weir: &Path,
    broker: SocketAddr,
    msgs: &[(String, Vec<u8>)],
    readings: usize,
    pipeline: &str,
    tag: &str,
) -> (f64, Agent, TempDir) {
    let dir = TempDir::new(&format!("bench-{tag}"));
    let agent = start_agent(
        weir,
        &dir.0,
        broker,
        pipeline,
        tag,
        "[checkpoint]\ninterval = \"10s\"\n",
    );
    let cpu0 = agent.cpu_secs();
    let t0 = Instant::now();
    rt.block_on(publish(broker, msgs));
    loop {
        if agent.metric("weir_readings_total") as usize >= readings {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "agent too slow");
        std::thread::sleep(Duration::from_millis(2));
    }
    let rate = readings as f64 / t0.elapsed().as_secs_f64();
    // On a machine whose cores the broker and the publisher share, the
    // agent's own CPU time per reading is the steadier figure.
    println!(
        "   weir used {:.3} µs of CPU per reading ({tag})",
        (agent.cpu_secs() - cpu0) * 1e6 / readings as f64
    );
    (rate, agent, dir)
}

/// Publishes `msgs` at QoS 1, `per_s` a second, in 10 ms steps.
async fn publish_steady(addr: SocketAddr, msgs: &[(String, Vec<u8>)], per_s: usize) {
    let mut o = MqttOptions::new(
        format!("bench-steady-{}", free_port()),
        "127.0.0.1",
        addr.port(),
    );
    o.set_inflight(1000).set_keep_alive(Duration::from_secs(30));
    let (c, mut el) = AsyncClient::new(o, 10_000);
    let n = msgs.len();
    let owned: Vec<_> = msgs.to_vec();
    let per_tick = (per_s / 100).max(1);
    let pubber = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for chunk in owned.chunks(per_tick) {
            tick.tick().await;
            for (t, p) in chunk {
                c.publish(t.clone(), QoS::AtLeastOnce, false, p.clone())
                    .await
                    .expect("publish");
            }
        }
        c
    });
    let mut acked = 0;
    while acked < n {
        match el.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("publisher: {e}"),
        }
    }
    let c = pubber.await.expect("publisher task");
    let _ = c.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(200), el.poll()).await;
}

/// The `weir_ack_wait_seconds` buckets: (bound, cumulative count).
fn ack_wait(agent: &Agent) -> Vec<(f64, f64)> {
    weir_agent::run::metrics::ACK_WAIT_BUCKETS
        .iter()
        .map(|b| {
            (
                *b,
                agent.metric(&format!("weir_ack_wait_seconds_bucket{{le=\"{b}\"}}")),
            )
        })
        .chain([(
            f64::INFINITY,
            agent.metric("weir_ack_wait_seconds_bucket{le=\"+Inf\"}"),
        )])
        .collect()
}

/// The bucket bound at quantile `q` of the observations between two
/// snapshots of [`ack_wait`].
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let total = after.last().unwrap().1 - before.last().unwrap().1;
    for (b, a) in before.iter().zip(after) {
        if a.1 - b.1 >= (q * total).ceil().max(1.0) {
            return a.0;
        }
    }
    f64::INFINITY
}

/// Figure 6: a steady plant with and without a write budget (through the
/// bench broker at `broker`, and through one with no in-flight limit).
fn budget_bench(rt: &tokio::runtime::Runtime, weir: &Path, broker: SocketAddr) {
    let rate: usize = arg("--steady-rate")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let secs: usize = arg("--steady-secs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let budget = arg("--budget").unwrap_or_else(|| "2GiB".into());
    // Two windows of 10 s to settle, then the measured part.
    let warm = json_messages(rate * 25, 1_000, (rate / 1_000).max(1));
    let steady = json_messages(rate * secs, 1_000, (rate / 1_000).max(1));
    let payload: f64 = steady.iter().map(|m| m.1.len() as f64).sum::<f64>() / steady.len() as f64;
    // The broker's in-flight window toward weir bounds a group (the
    // budget's quiet rule closes a group the broker waits on): the bench
    // broker's 1,000, and none.
    let tmp = TempDir::new("bench-budget-mosq");
    let wide = Mosquitto::start_with(
        &tmp.0,
        "max_inflight_messages 0\nmax_queued_messages 1000000\n",
    );
    for (tag, b, broker, window) in [
        ("off", "off", broker, "1,000"),
        ("budget", budget.as_str(), broker, "1,000"),
        ("budget-wide", budget.as_str(), wide.addr(), "unlimited"),
    ] {
        let dir = TempDir::new(&format!("bench-budget-{tag}"));
        let agent = start_agent(
            weir,
            &dir.0,
            broker,
            PIPELINE_JSON,
            &format!("budget-{tag}"),
            &format!("[checkpoint]\ninterval = \"5m\"\n[storage]\nwrite_budget = \"{b}\"\nwindow = \"10s\"\n"),
        );
        rt.block_on(publish_steady(broker, &warm, rate));
        let n0 = agent.metric("weir_readings_total");
        let bytes0 = agent.metric("weir_storage_bytes_written_total");
        let syncs0 = agent.metric("weir_storage_syncs_total");
        let w0 = ack_wait(&agent);
        let sum0 = agent.metric("weir_ack_wait_seconds_sum");
        rt.block_on(publish_steady(broker, &steady, rate));
        let want = (warm.len() + steady.len()) as f64;
        let t0 = Instant::now();
        while agent.metric("weir_readings_total") < want {
            assert!(t0.elapsed() < Duration::from_secs(120), "agent too slow");
            std::thread::sleep(Duration::from_millis(5));
        }
        let n = agent.metric("weir_readings_total") - n0;
        let bytes = agent.metric("weir_storage_bytes_written_total") - bytes0;
        let syncs = agent.metric("weir_storage_syncs_total") - syncs0;
        let w1 = ack_wait(&agent);
        let mean = (agent.metric("weir_ack_wait_seconds_sum") - sum0)
            / (w1.last().unwrap().1 - w0.last().unwrap().1).max(1.0);
        let interval = agent.metric("weir_storage_commit_interval_seconds");
        agent.stop();
        println!(
            "6. steady {rate} readings/s for {secs} s, write_budget {b}, broker in-flight window {window}: {:.1} B/reading, {:.2} B per payload byte ({payload:.1} B payloads), {:.4} syncs/reading ({:.1}/s), commit interval {:.0} ms, ack wait mean {mean:.3} s, p50 <= {:.3} s, p99 <= {:.3} s; {:.2} GB a day at this rate",
            bytes / n,
            bytes / n / payload,
            syncs / n,
            syncs / secs as f64,
            interval * 1e3,
            quantile(&w0, &w1, 0.5),
            quantile(&w0, &w1, 0.99),
            bytes / secs as f64 * 86_400.0 / 1e9,
        );
    }
}

/// Figure 2: SenML packs of 100 readings through the agent against the
/// broker's ceiling for the same messages.
fn senml_bench(rt: &tokio::runtime::Runtime, weir: &Path, broker: SocketAddr, n: usize) {
    let senml = senml_messages(n * 4, 1_000, 100);
    let c = ceiling(rt, broker, &senml, "pack/+");
    let (a, agent, _d) = through_agent(rt, weir, broker, &senml, n * 4, PIPELINE_SENML, "senml");
    let senml_rss = agent.proc_field("status", "VmHWM:") as f64 / 1024.0;
    agent.stop();
    println!(
        "2. SenML packs of 100: weir {a:.0} readings/s ({:.0} messages/s) vs the broker's ceiling {:.0} readings/s: ratio {:.3} (target >= 0.9)",
        a / 100.0,
        c * 100.0,
        a / (c * 100.0)
    );
    println!("   peak RSS during the SenML run: {senml_rss:.1} MiB");
}

/// Copies the files of `from` (a data directory: no subdirectories) into a
/// new `to`.
fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            let dst = to.join(e.file_name());
            std::fs::copy(e.path(), &dst).unwrap();
            // Written back now: the agent's first fsync would otherwise
            // write the whole copy and count in its recovery.
            std::fs::File::open(&dst).unwrap().sync_all().unwrap();
        }
    }
}

/// Figure 5, recovery: 10,000 keys, a long journal, SIGKILL, restart.
/// With `--recover-rounds R` the killed agent's data directory is kept and
/// restarted R times from a fresh copy of it, alternately with
/// `--weir-compare PATH` when given (the same store for both binaries);
/// `--keep-store DIR` keeps a copy of it in DIR (for profiling).
fn recovery_bench(rt: &tokio::runtime::Runtime, weir: &Path, broker: SocketAddr, recover_n: usize) {
    let dir = TempDir::new("bench-recover");
    // 10,000 sensors at 10 readings a second each: the journal spans
    // recover_n / 10,000 s of the plant.
    let msgs = json_messages(recover_n, 10_000, 10);
    let agent = start_agent(
        weir,
        &dir.0,
        broker,
        PIPELINE_JSON,
        "fill",
        "[checkpoint]\ninterval = \"1h\"\n",
    );
    rt.block_on(publish(broker, &msgs));
    while (agent.metric("weir_readings_total") as usize) < recover_n {
        std::thread::sleep(Duration::from_millis(5));
    }
    agent.kill();
    let rounds: usize = arg("--recover-rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let compare = arg("--weir-compare").map(PathBuf::from);
    let kept = TempDir::new("bench-recover-kept");
    if rounds > 1 || compare.is_some() {
        copy_dir(&dir.0.join("data"), &kept.0);
    }
    if let Some(to) = arg("--keep-store") {
        copy_dir(&dir.0.join("data"), Path::new(&to));
        println!("the killed agent's data directory is kept in {to}");
    }
    let mut bins = vec![weir.to_path_buf()];
    bins.extend(compare);
    for r in 0..rounds {
        for (b, bin) in bins.iter().enumerate() {
            if r + b > 0 {
                copy_dir(&kept.0, &dir.0.join("data"));
            }
            let t0 = Instant::now();
            let agent = start_agent(
                bin,
                &dir.0,
                broker,
                PIPELINE_JSON,
                "recover",
                "[checkpoint]\ninterval = \"1h\"\n",
            );
            let wall = t0.elapsed();
            let log = agent.wait_log("recovered", Duration::from_secs(60));
            let line = log.lines().find(|l| l.contains("recovered")).unwrap_or("");
            let what = if bins.len() > 1 || rounds > 1 {
                format!(" [{}, round {r}]", bin.display())
            } else {
                String::new()
            };
            println!(
                "5. recovery after SIGKILL, 10,000 keys, {recover_n}-reading journal{what}: {} (process start to connected: {:.0} ms; target: replay <= 400 ms)",
                line.split("recovered").nth(1).unwrap_or("?").trim(),
                wall.as_secs_f64() * 1e3
            );
            agent.kill();
        }
    }
}

fn main() {
    let weir = PathBuf::from(arg("--weir").expect("--weir PATH to a release weir binary"));
    let n: usize = arg("--readings")
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let rounds: usize = arg("--rounds").and_then(|v| v.parse().ok()).unwrap_or(2);
    let recover_n: usize = arg("--recover-readings")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let tmp = TempDir::new("bench-mosq");
    let mosq = Mosquitto::start(&tmp.0);
    let broker = mosq.addr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::args().any(|a| a == "--only-budget") {
        budget_bench(&rt, &weir, broker);
        return;
    }

    if std::env::args().any(|a| a == "--only-recovery") {
        recovery_bench(&rt, &weir, broker, recover_n);
        return;
    }

    if std::env::args().any(|a| a == "--only-senml") {
        senml_bench(&rt, &weir, broker, n);
        return;
    }

    let json = json_messages(n, 1_000, 1);
    let payload: usize = json.iter().map(|m| m.1.len()).sum();
    let mut best_ceiling: f64 = 0.0;
    let mut best_agent: f64 = 0.0;
    let mut rss = 0;
    let mut flash = 0.0;
    // `--only-rss`: the 1,000-sensor runs for peak RSS only (no ceiling,
    // no later benchmarks); `--smaps PREFIX` keeps each agent's
    // /proc/<pid>/smaps at the end of its run in PREFIX-<tag>.
    let only_rss = std::env::args().any(|a| a == "--only-rss");
    let smaps = |agent: &Agent, tag: &str| {
        if let Some(p) = arg("--smaps") {
            let s = std::fs::read_to_string(format!("/proc/{}/smaps", agent.child.id()));
            let _ = std::fs::write(format!("{p}-{tag}"), s.unwrap_or_default());
        }
    };
    for r in 0..rounds {
        let c = if only_rss {
            f64::NAN
        } else {
            ceiling(&rt, broker, &json, "plant/+/v")
        };
        let (a, agent, _dir) = through_agent(
            &rt,
            &weir,
            broker,
            &json,
            n,
            PIPELINE_JSON,
            &format!("json{r}"),
        );
        rss = rss.max(agent.proc_field("status", "VmHWM:") * 1024);
        let written = agent.proc_field("io", "write_bytes:") as f64;
        println!(
            "round {r}: {} group commits ({:.0} readings each), {} acks written of {}, peak RSS {:.1} MiB",
            agent.metric("weir_journal_commits_total"),
            n as f64 / agent.metric("weir_journal_commits_total").max(1.0),
            agent.metric("weir_acks_written_total"),
            agent.metric("weir_acks_total"),
            agent.proc_field("status", "VmHWM:") as f64 / 1024.0
        );
        flash = written / n as f64;
        println!(
            "round {r}: RSS now {:.1} MiB heap and stacks + {:.1} MiB mapped files (code)",
            agent.proc_field("status", "RssAnon:") as f64 / 1024.0,
            agent.proc_field("status", "RssFile:") as f64 / 1024.0
        );
        smaps(&agent, &format!("json{r}"));
        agent.stop();
        println!("round {r}: broker ceiling {:.0} readings/s, weir run (journal) {:.0} readings/s, ratio {:.3}", c, a, a / c);
        best_ceiling = best_ceiling.max(c);
        best_agent = best_agent.max(a);
    }
    println!(
        "1. JSON, 1 reading/message, QoS 1, journal on, {n} readings over 1,000 sensors: weir {best_agent:.0}/s vs broker ceiling {best_ceiling:.0}/s (best of {rounds}): ratio {:.3} (target >= 1.1)",
        best_agent / best_ceiling
    );
    println!(
        "3. agent peak RSS (VmHWM) with 1,000 sensors: {:.1} MiB (target <= 12 MiB)",
        rss as f64 / (1 << 20) as f64
    );
    // What a gateway runs: `--profile board --no-default-features` (no demo
    // broker, opt-level z; bench/agent.sh builds it static with musl, as
    // `weir bundle` does), under the same load.
    if let Some(board) = arg("--weir-board") {
        let (a, agent, _dir) = through_agent(
            &rt,
            Path::new(&board),
            broker,
            &json,
            n,
            PIPELINE_JSON,
            "board",
        );
        let r = agent.proc_field("status", "VmHWM:") as f64 / 1024.0;
        println!(
            "   the gateway build: RSS now {:.1} MiB heap and stacks + {:.1} MiB mapped files (code)",
            agent.proc_field("status", "RssAnon:") as f64 / 1024.0,
            agent.proc_field("status", "RssFile:") as f64 / 1024.0
        );
        smaps(&agent, "board");
        agent.stop();
        println!("   the gateway build ({board}): peak RSS {r:.1} MiB (target <= 10 MiB), {a:.0} readings/s");
    }
    if only_rss {
        return;
    }
    println!(
        "4. flash written per reading: {flash:.1} B vs payload {:.1} B/reading: {:.2}x (target <= 1.5x)",
        payload as f64 / n as f64,
        flash / (payload as f64 / n as f64)
    );

    senml_bench(&rt, &weir, broker, n);

    recovery_bench(&rt, &weir, broker, recover_n);
    budget_bench(&rt, &weir, broker);
}
