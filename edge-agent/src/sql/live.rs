//! `weir sql` over the live broker: a query whose source table is an mqtt
//! table subscribes to the table's topics, decodes each message with the
//! decoder `weir run` would use, and prints the result rows as their
//! windows fire, until `LIMIT n` rows are out or the user presses Ctrl-C.
//!
//! The decoded readings are written as CSV rows of the table's columns and
//! piped into the same replay loop as a file ([`super::exec::replay`]), so
//! a query gives over the broker the rows it gives over a recording of the
//! same readings: `WHERE`, expressions, `HAVING`, user functions and
//! cascades included.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{Client, Connection, Event, Packet, QoS};

use super::ddl::SqlType;
use super::exec::{row_ends, split_csv, PipeReader};
use super::SqlPipeline;
use crate::decode::Batch;
use crate::gateway::BrokerConfig;
use crate::pipeline_file::{Column, CsvMapping, MqttSource, TsFormat};
use crate::timefmt::format_datetime_ms;

/// Ctrl-C while a live query runs: set by the shell's signal handler.
#[derive(Debug, Default)]
pub struct Interrupt {
    /// A live query is running (a Ctrl-C ends it rather than the shell).
    pub running: AtomicBool,
    /// The running query should end.
    pub stop: AtomicBool,
}

/// Runs `p` over the broker at `broker` (`mqtt://host[:port]` or
/// `mqtts://`), logging in and checking TLS as `login` says (a
/// `gateway.toml`'s `[broker]`: user, password, CA and client
/// certificate; its client id is not used), printing its rows to `out` as a
/// table until its `LIMIT` or `int.stop`.
///
/// # Errors
/// Only I/O errors of `out`; a broker that cannot be reached, or a bad
/// address, is reported on `out` as an `[ERROR]`.
pub fn run(
    p: &SqlPipeline,
    m: &MqttSource,
    broker: &str,
    login: Option<&BrokerConfig>,
    int: &Interrupt,
    out: &mut dyn Write,
) -> io::Result<()> {
    if p.is_unbounded() {
        return super::shell::error(
            out,
            0,
            0,
            "an aggregation without a window over the live broker: its rows come once the input ends, and the stream does not end",
            "aggregate over windows (FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(rowtime), INTERVAL '10' SECOND)) … GROUP BY window_start, window_end), or query a recording with 'connector' = 'filesystem'",
        );
    }
    if p.query.top_n.is_some() {
        return super::shell::error(
            out,
            0,
            0,
            "a window Top-N over the live broker: weir writes a Top-N's rows once its input ends, and the stream does not end",
            "query a recording with 'connector' = 'filesystem', or drop the ROW_NUMBER() to see every row as windows fire",
        );
    }
    if !p.query.order.is_empty() {
        return super::shell::error(
            out,
            0,
            0,
            "ORDER BY over the live broker: the stream does not end, so its rows cannot be sorted",
            "remove the ORDER BY (rows come as windows fire), or query a recording with 'connector' = 'filesystem'",
        );
    }
    let Some((host, port, tls)) = crate::gateway::parse_url(broker) else {
        return super::shell::error(
            out,
            0,
            0,
            &format!("'weir.sql.broker' = '{broker}' is not a broker address"),
            "SET 'weir.sql.broker' = 'mqtt://HOST:PORT' (or mqtts:// with weir sql --config gateway.toml for its CA)",
        );
    };
    let mut b = login.cloned().unwrap_or_else(|| BrokerConfig {
        host: String::new(),
        port: 0,
        tls: false,
        client_id: String::new(),
        username: None,
        password: None,
        ca: None,
        cert: None,
        key: None,
        keep_alive_ms: 30_000,
        max_packet: 64 << 10,
        inflight: 10,
        protocol: 4,
        max_held: crate::gateway::DEFAULT_MAX_HELD,
    });
    b.host = host;
    b.port = port;
    b.tls = tls;
    // Its own client id and a clean session: the agent's session (and its
    // queued messages) stays the agent's.
    b.client_id = format!("weir-sql-{}-{}", std::process::id(), next_id());
    let mut opts = match crate::run::mqtt::options(&b, crate::run::mqtt::Link::Output) {
        Ok(o) => o,
        Err(e) => return super::shell::error(
            out,
            0,
            0,
            &format!("cannot read {broker}: {e}"),
            "for TLS, start weir sql with --config gateway.toml (its [broker] ca, cert and key)",
        ),
    };
    opts.set_clean_session(true);
    let src = p.inner.as_deref().unwrap_or(p);
    let map = &src.pipeline.csv[0];
    let (client, conn) = Client::new(opts, 16);
    let (tx, rx) = sync_channel::<Vec<u8>>(64);
    let (ready_tx, ready_rx) = sync_channel::<Result<(), String>>(1);
    let counts = Counts::default();
    int.stop.store(false, Relaxed);
    int.running.store(true, Relaxed);
    let result = std::thread::scope(|s| {
        let reader = std::thread::Builder::new()
            .name("weir-sql-mqtt".into())
            .spawn_scoped(s, || {
                read(
                    &client,
                    conn,
                    m,
                    map,
                    Link {
                        tx,
                        ready: ready_tx,
                        stop: &int.stop,
                        counts: &counts,
                    },
                )
            })?;
        let r = query(p, m, broker, int, &ready_rx, rx, &counts, out);
        int.stop.store(true, Relaxed);
        let _ = client.disconnect();
        let _ = reader.join();
        r
    });
    int.running.store(false, Relaxed);
    result
}

/// A fresh client id part for each query of the process.
fn next_id() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Relaxed)
}

/// What the MQTT thread counts for the summary line.
#[derive(Default)]
struct Counts {
    /// Readings decoded and passed on.
    readings: AtomicU64,
    /// Messages or records that did not decode, and readings whose key or
    /// text the CSV rows cannot carry.
    bad: AtomicU64,
    /// Reconnections after a lost connection.
    reconnects: AtomicU64,
}

#[allow(clippy::too_many_arguments)]
fn query(
    p: &SqlPipeline,
    m: &MqttSource,
    broker: &str,
    int: &Interrupt,
    ready: &Receiver<Result<(), String>>,
    rx: Receiver<Vec<u8>>,
    counts: &Counts,
    out: &mut dyn Write,
) -> io::Result<()> {
    match ready.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return super::shell::error(
                out,
                0,
                0,
                &format!("cannot read {broker}: {e}"),
                "start the broker, or name it with SET 'weir.sql.broker' = 'mqtt://HOST:PORT' (or weir sql --broker URL, or --config gateway.toml for the gateway's broker and login)",
            )
        }
        // Interrupted before the subscription was acknowledged.
        Err(_) => return writeln!(out, "[INFO] Query ended."),
    }
    writeln!(
        out,
        "[INFO] Reading '{}' on {broker}; rows are printed as their windows fire. Ctrl-C ends the query.",
        m.topics.join(";")
    )?;
    out.flush()?;
    // The header at once, before the first window fires.
    let mut table = LiveTable::new(&p.query.columns, &int.stop, out);
    let names: Vec<String> = p.query.columns.iter().map(|c| c.name.clone()).collect();
    table.rule()?;
    table.cells(&names)?;
    table.rule()?;
    table.out.flush()?;
    let mut late_bad = 0u64;
    let (sum, _) = super::exec::replay(p, PipeReader::new(rx), &mut table, |_, _| late_bad += 1)?;
    let rows = table.rows;
    table.close()?;
    let how = if int.stop.load(Relaxed) && p.query.limit.is_none_or(|n| rows < n) {
        "ended by Ctrl-C; windows still open were not printed"
    } else {
        "ended"
    };
    writeln!(
        out,
        "{rows} row(s), query {how} ({} readings, {} bad, {} late, {} reconnects)",
        counts.readings.load(Relaxed),
        counts.bad.load(Relaxed) + late_bad,
        sum.late,
        counts.reconnects.load(Relaxed),
    )
}

/// The MQTT thread's ends.
struct Link<'a> {
    tx: SyncSender<Vec<u8>>,
    ready: SyncSender<Result<(), String>>,
    stop: &'a AtomicBool,
    counts: &'a Counts,
}

/// Subscribes to `m`'s topics (again after each reconnection: the session
/// is clean) and sends each message's readings as CSV rows of `map`.
fn read(client: &Client, mut conn: Connection, m: &MqttSource, map: &CsvMapping, l: Link<'_>) {
    let qos = if m.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let (mut acked, mut ready, mut connected_once) = (0usize, false, false);
    let mut batch = Batch::new();
    let mut backoff = 100u64;
    while !l.stop.load(Relaxed) {
        let ev = match conn.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(rumqttc::RecvTimeoutError::Timeout) => continue,
            Err(rumqttc::RecvTimeoutError::Disconnected) => break,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = 100;
                if connected_once {
                    l.counts.reconnects.fetch_add(1, Relaxed);
                }
                connected_once = true;
                acked = 0;
                for f in &m.topics {
                    if client.try_subscribe(f.as_str(), qos).is_err() {
                        let _ = l
                            .ready
                            .try_send(Err("the subscription was not sent".into()));
                        return;
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(a))) => {
                if a.return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    let _ = l.ready.try_send(Err(format!(
                        "the broker refused the subscription to '{}'",
                        m.topics.join(";")
                    )));
                    return;
                }
                acked += 1;
                if acked == m.topics.len() && !ready {
                    ready = true;
                    let _ = l.ready.try_send(Ok(()));
                }
            }
            Ok(Event::Incoming(Packet::Publish(msg))) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                let rows = rows_of(m, map, &msg.topic, &msg.payload, now, &mut batch, l.counts);
                if !rows.is_empty() && l.tx.send(rows).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !ready {
                    let _ = l.ready.try_send(Err(e.to_string()));
                    return;
                }
                // Lost after the subscription: retried (the next ConnAck
                // subscribes again), after a backoff that is no
                // synchronisation but a pause between attempts.
                std::thread::sleep(Duration::from_millis(backoff));
                backoff = (backoff * 2).min(5_000);
            }
        }
    }
}

/// One message's readings as CSV rows of `map`'s columns.
fn rows_of(
    m: &MqttSource,
    map: &CsvMapping,
    topic: &str,
    payload: &[u8],
    now: i64,
    batch: &mut Batch,
    counts: &Counts,
) -> Vec<u8> {
    let mut rows = Vec::new();
    if m.decoder.decode(topic, payload, now, batch).is_err() {
        counts.bad.fetch_add(1, Relaxed);
        return rows;
    }
    counts.bad.fetch_add(batch.errors().len() as u64, Relaxed);
    'sample: for i in 0..batch.len() {
        let s = batch.get(i);
        let start = rows.len();
        for (c, col) in map.columns.iter().enumerate() {
            if c > 0 {
                rows.push(b',');
            }
            match *col {
                Column::Key => {
                    if !cell(&mut rows, s.key) {
                        rows.truncate(start);
                        counts.bad.fetch_add(1, Relaxed);
                        continue 'sample;
                    }
                }
                Column::Ts => match map.timestamp {
                    TsFormat::Seconds => {
                        crate::numfmt::push_i64(&mut rows, s.ts.div_euclid(1000));
                    }
                    TsFormat::Millis => crate::numfmt::push_i64(&mut rows, s.ts),
                    TsFormat::Micros => crate::numfmt::push_i64(&mut rows, s.ts * 1000),
                    TsFormat::Datetime => {
                        rows.extend_from_slice(format_datetime_ms(s.ts).as_bytes())
                    }
                },
                Column::Field(f) => {
                    let v = s.values.get(f).copied().unwrap_or(f64::NAN);
                    // NULL (a missing or null field) is an empty cell.
                    if !v.is_nan() {
                        rows.extend_from_slice(format!("{v:?}").as_bytes());
                    }
                }
                Column::Text(t) => {
                    if let Some(text) = batch.text(i, t) {
                        if !cell(&mut rows, text) {
                            rows.truncate(start);
                            counts.bad.fetch_add(1, Relaxed);
                            continue 'sample;
                        }
                    }
                }
                Column::Skip => {}
            }
        }
        rows.push(b'\n');
        counts.readings.fetch_add(1, Relaxed);
    }
    rows
}

/// Writes a key or text cell, in quotes if it holds a comma or a quote;
/// `false` if it holds a line break, which a CSV row cannot carry (a quoted
/// field does not span lines in weir's CSV input).
fn cell(rows: &mut Vec<u8>, s: &str) -> bool {
    if s.bytes().any(|b| matches!(b, b'\n' | b'\r')) {
        return false;
    }
    crate::replay::push_text(rows, s);
    true
}

/// Result rows printed as a table as they come (Flink's tableau mode in
/// streaming): column widths from the header and the column types.
struct LiveTable<'a> {
    width: Vec<usize>,
    stop: &'a AtomicBool,
    out: &'a mut dyn Write,
    /// An unfinished line.
    part: Vec<u8>,
    header: bool,
    rows: u64,
}

impl<'a> LiveTable<'a> {
    fn new(
        cols: &[super::plan::ResultColumn],
        stop: &'a AtomicBool,
        out: &'a mut dyn Write,
    ) -> Self {
        let width = cols
            .iter()
            .map(|c| {
                let ty = match c.ty {
                    SqlType::Timestamp | SqlType::TimestampLtz => 23,
                    SqlType::BigInt => 20,
                    SqlType::Int => 11,
                    SqlType::Double | SqlType::Decimal(_) => 12,
                    SqlType::Boolean => 5,
                    SqlType::String => 12,
                };
                c.name.chars().count().max(ty)
            })
            .collect();
        LiveTable {
            width,
            stop,
            out,
            part: Vec::new(),
            header: true,
            rows: 0,
        }
    }

    fn rule(&mut self) -> io::Result<()> {
        let rule: String = self
            .width
            .iter()
            .map(|w| format!("+{}", "-".repeat(w + 2)))
            .collect::<String>()
            + "+";
        writeln!(self.out, "{rule}")
    }

    fn cells(&mut self, cells: &[String]) -> io::Result<()> {
        let mut s = String::new();
        let mut cells = cells.iter().map(String::as_str);
        for w in &self.width {
            let c = cells.next().unwrap_or_default();
            s.push_str(&format!("| {c:>w$} "));
        }
        writeln!(self.out, "{s}|")
    }

    /// The closing rule.
    fn close(mut self) -> io::Result<()> {
        self.rule()?;
        self.out.flush()
    }
}

impl Write for LiveTable<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // After Ctrl-C, the windows the end of input fires are not printed.
        if self.stop.load(Relaxed) {
            return Ok(buf.len());
        }
        self.part.extend_from_slice(buf);
        // `part` starts at a row's start: no quote is open there.
        let ends: Vec<usize> = row_ends(&self.part, &mut false).collect();
        let mut start = 0;
        for i in ends {
            // The CSV header line was printed before.
            if self.header {
                self.header = false;
            } else {
                let line = String::from_utf8_lossy(&self.part[start..i]).into_owned();
                self.cells(&split_csv(&line))?;
                self.rows += 1;
            }
            start = i + 1;
        }
        self.part.drain(..start);
        self.out.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::MqttOptions;
    use std::sync::mpsc::{channel, Sender};

    /// The shell's output, sent as it is written.
    struct ChanOut(Sender<Vec<u8>>);

    impl Write for ChanOut {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const TABLE: &str = "CREATE TABLE s (sensor STRING, ts BIGINT, v DOUBLE, site STRING,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3), WATERMARK FOR rowtime AS rowtime)
  WITH ('connector' = 'mqtt', 'topic' = 'plant/+/v', 'format' = 'json');
";

    const QUERY: &str = "SELECT sensor, window_start, COUNT(*) AS n, AVG(v) AS mean
  FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
  WHERE site = 'north'
  GROUP BY sensor, window_start, window_end LIMIT 3;
SHOW TABLES;
";

    #[cfg(feature = "demo")]
    #[test]
    fn a_query_reads_the_live_broker_until_its_limit() {
        let addr = crate::demo::start_broker().unwrap();
        let script = format!("{TABLE}SET 'weir.sql.broker' = 'mqtt://{addr}';\n{QUERY}");
        let (otx, orx) = channel::<Vec<u8>>();
        let shell = std::thread::spawn(move || {
            crate::sql::shell::run(script.as_bytes(), ChanOut(otx), false)
        });
        // The rows are published once the shell says it reads the topics.
        let mut seen = String::new();
        while !seen.contains("[INFO] Reading") {
            let b = orx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{e}: {seen}"));
            seen.push_str(&String::from_utf8(b).unwrap());
        }
        let (client, mut conn) = Client::new(
            MqttOptions::new("weir-sql-test-pub", addr.ip().to_string(), addr.port()),
            64,
        );
        let r = |s: &str, ts: u64, v: f64, site: &str| {
            // 1700000000000 is 2023-11-14 22:13:20.
            let ts = 1_700_000_000_000 + ts;
            format!(r#"{{"sensor":"{s}","ts":{ts},"v":{v},"site":"{site}"}}"#)
        };
        for (topic, msg) in [
            ("plant/p1/v", r("p1", 1000, 1.0, "north")),
            // A key with a comma: quoted on the way through the CSV path.
            ("plant/p2/v", r("p,2", 1100, 2.0, "north")),
            // Not north: filtered.
            ("plant/p1/v", r("p1", 1200, 30.0, "south")),
            // Not JSON: counted bad.
            ("plant/p1/v", "{\"sensor\":".to_string()),
            ("plant/p1/v", r("p1", 1400, 5.0, "north")),
            // Fires [1 s, 2 s) for p1 and p2.
            ("plant/p2/v", r("p,2", 2600, 4.0, "north")),
            // Fires [2 s, 3 s) for p2: the third row, the limit.
            ("plant/p1/v", r("p1", 3600, 6.0, "north")),
            ("plant/p1/v", r("p1", 9000, 7.0, "north")),
        ] {
            client.publish(topic, QoS::AtLeastOnce, false, msg).unwrap();
        }
        let publisher = std::thread::spawn(move || {
            for ev in conn.iter() {
                if ev.is_err() {
                    break;
                }
            }
        });
        // A guard against a stall, not a wait: the shell ends at the limit.
        loop {
            match orx.recv_timeout(Duration::from_secs(60)) {
                Ok(b) => seen.push_str(&String::from_utf8(b).unwrap()),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("the query did not end ({e}): {seen}"),
            }
        }
        shell.join().unwrap().unwrap();
        let _ = client.disconnect();
        publisher.join().unwrap();
        let at = seen.find("[INFO] Reading").unwrap();
        let rest = &seen[at..];
        let want =
            "+--------------+-------------------------+----------------------+--------------+
|       sensor |            window_start |                    n |         mean |
+--------------+-------------------------+----------------------+--------------+
|           p1 | 2023-11-14 22:13:21.000 |                    2 |     3.000000 |
|          p,2 | 2023-11-14 22:13:21.000 |                    1 |     2.000000 |
|          p,2 | 2023-11-14 22:13:22.000 |                    1 |     4.000000 |
+--------------+-------------------------+----------------------+--------------+
3 row(s), query ended (";
        assert!(rest.contains(want), "{seen}");
        assert!(
            rest.contains(" 1 bad, 0 late, 0 reconnects)\ns\n1 table(s)\n"),
            "{seen}"
        );
    }

    #[cfg(feature = "demo")]
    #[test]
    fn a_query_without_group_by_prints_each_row_as_it_comes() {
        let addr = crate::demo::start_broker().unwrap();
        let query = "SELECT sensor, rowtime, v * 10 AS v10, site FROM s WHERE v > 3 LIMIT 3;\n";
        let script = format!("{TABLE}SET 'weir.sql.broker' = 'mqtt://{addr}';\n{query}");
        let (otx, orx) = channel::<Vec<u8>>();
        let shell = std::thread::spawn(move || {
            crate::sql::shell::run(script.as_bytes(), ChanOut(otx), false)
        });
        let mut seen = String::new();
        while !seen.contains("[INFO] Reading") {
            let b = orx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{e}: {seen}"));
            seen.push_str(&String::from_utf8(b).unwrap());
        }
        let (client, mut conn) = Client::new(
            MqttOptions::new("weir-sql-test-rows", addr.ip().to_string(), addr.port()),
            64,
        );
        // Out of order and far apart: rows do not wait for a watermark.
        for (ts, v, site) in [
            (5000, 1.0, "north"),
            (1000, 4.0, "south"),
            (9000, 2.0, "north"),
            (2000, 6.5, "north"),
            (3000, 9.0, "x"),
        ] {
            let ts = 1_700_000_000_000u64 + ts;
            let msg = format!(r#"{{"sensor":"p1","ts":{ts},"v":{v},"site":"{site}"}}"#);
            client
                .publish("plant/p1/v", QoS::AtLeastOnce, false, msg)
                .unwrap();
        }
        let publisher = std::thread::spawn(move || {
            for ev in conn.iter() {
                if ev.is_err() {
                    break;
                }
            }
        });
        // A guard against a stall, not a wait: the shell ends at the limit.
        loop {
            match orx.recv_timeout(Duration::from_secs(60)) {
                Ok(b) => seen.push_str(&String::from_utf8(b).unwrap()),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("the query did not end ({e}): {seen}"),
            }
        }
        shell.join().unwrap().unwrap();
        let _ = client.disconnect();
        publisher.join().unwrap();
        for row in [
            "|           p1 | 2023-11-14 22:13:21.000 |    40.000000 |        south |",
            "|           p1 | 2023-11-14 22:13:22.000 |    65.000000 |        north |",
            "|           p1 | 2023-11-14 22:13:23.000 |    90.000000 |            x |",
        ] {
            assert!(seen.contains(row), "{row}\n{seen}");
        }
        assert!(seen.contains("3 row(s), query ended ("), "{seen}");
    }

    #[test]
    fn a_broker_that_is_not_there_is_an_error_and_the_session_goes_on() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = format!("{TABLE}SET 'weir.sql.broker' = 'mqtt://127.0.0.1:{port}';\n{QUERY}SET 'weir.sql.broker' = 'http://x';\n{QUERY}");
        let mut out = Vec::new();
        crate::sql::shell::run(script.as_bytes(), &mut out, false).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains(&format!("[ERROR] cannot read mqtt://127.0.0.1:{port}: ")),
            "{out}"
        );
        assert!(out.contains("help: start the broker"), "{out}");
        assert!(
            out.contains("[ERROR] 'weir.sql.broker' = 'http://x' is not a broker address"),
            "{out}"
        );
        assert_eq!(out.matches("1 table(s)").count(), 2, "{out}");
        // A stream that does not end cannot be sorted.
        let sorted = QUERY.replace(" LIMIT 3;", " ORDER BY n;");
        let mut out = Vec::new();
        crate::sql::shell::run(format!("{TABLE}{sorted}").as_bytes(), &mut out, false).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("[ERROR] ORDER BY over the live broker"),
            "{out}"
        );
    }

    #[test]
    fn csv_cells_lose_their_quotes() {
        assert_eq!(split_csv("a,\"b,c\",\"d\"\"e\","), ["a", "b,c", "d\"e", ""]);
    }
}
