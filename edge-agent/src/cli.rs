//! The `weir` command line.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weir_core::engine::Reject;
use weir_core::spec::OperatorKind;

use crate::pipeline_file::{self, ConfigError};
use crate::replay::{self, RowError};

/// weir: event-time stream analytics and anomaly detection for edge gateways.
#[derive(Parser, Debug)]
#[command(name = "weir", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a CSV file through a pipeline as fast as possible and write the results.
    Replay {
        /// The pipeline file (TOML, or Flink SQL in a `.sql` file).
        #[arg(long, short)]
        pipeline: PathBuf,
        /// The input CSV ('-' for standard input); a SQL pipeline's
        /// filesystem table names a default with its 'path' option.
        #[arg(long, short)]
        input: Option<PathBuf>,
        /// Where to write results (default, or `-`: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Which source the rows belong to (default: the first).
        #[arg(long)]
        source: Option<String>,
        /// How many bad rows to print before only counting them.
        #[arg(long, default_value_t = 10)]
        show_bad: u64,
    },
    /// Validate a pipeline file, a gateway file (`gateway.toml`, with the
    /// pipeline it names) or a board profile (`boards/<name>/board.toml`);
    /// errors name the line and what to do.
    Check {
        /// The file to check (a pipeline, gateway.toml or board.toml).
        #[arg(required_unless_present = "store")]
        file: Option<PathBuf>,
        /// Verify a store offline instead (a data directory or a weir.redb):
        /// checksums, journal range, checkpoint, outbox, pipeline. Reads a
        /// copy; the store itself is never written.
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
    /// Build the tarball a gateway is flashed with: a static, stripped weir for
    /// the board, its config, a hardened systemd unit, broker config and a fresh
    /// device identity (the public key is printed on stdout).
    #[cfg(feature = "host-tools")]
    Bundle {
        /// A board name under `boards/` (rpi4) or the path of a `board.toml`.
        #[arg(long)]
        board: String,
        /// The folder to write `weir-<board>-<version>.tar.gz` into.
        #[arg(long)]
        out: PathBuf,
        /// Package this already built weir instead of building one.
        #[arg(long)]
        binary: Option<PathBuf>,
        /// A pipeline to install as `/etc/weir/pipeline.toml` (checked against the board).
        #[arg(long)]
        pipeline: Option<PathBuf>,
        /// The gateway id (default: `<board>-<12 hex digits of its public key>`).
        #[arg(long)]
        id: Option<String>,
        /// Replace an existing tarball of the same name.
        #[arg(long)]
        force: bool,
    },
    /// Run the gateway agent: subscribe to the local broker, journal,
    /// window and detect, publish results and alerts (stops on SIGTERM).
    Run {
        /// The gateway file (`gateway.toml`: broker, id, data dir, pipeline).
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        /// Use this pipeline instead of the one the gateway file names.
        #[arg(long, short)]
        pipeline: Option<PathBuf>,
    },
    /// Zero-configuration demo: an embedded broker, simulated pumps (one
    /// develops a bearing fault) and a ready pipeline, shown live.
    #[cfg(feature = "demo")]
    Demo {
        /// Stop after this long (e.g. 30s, 2m); default: until Ctrl-C.
        #[arg(long = "for")]
        duration: Option<String>,
        /// How much faster than real time the simulated sensors run.
        #[arg(long, default_value_t = 20)]
        speed: u32,
        /// Keep the demo's data here (default: a fresh temporary folder).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// List the dead-letter table: the newest bad messages with the reason.
    Deadletters {
        /// The gateway file (its data directory holds the table).
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        /// Show only the newest N.
        #[arg(long, short = 'n', default_value_t = 50)]
        last: usize,
    },
    /// Fleet side of signed pipeline updates: keygen, sign, push, status.
    #[cfg(feature = "host-tools")]
    Fleet {
        /// What to do.
        #[command(subcommand)]
        action: Fleet,
    },
    /// An interactive Flink SQL shell (as Flink's SQL client): CREATE TABLE,
    /// SET, then SELECT over the table's file or, for an mqtt table, its
    /// topics on the live broker; EXPLAIN prints the plan.
    Sql {
        /// Run this file's statements first (as Flink's `-i` init file).
        #[arg(long, short)]
        init: Option<PathBuf>,
        /// The broker queries over mqtt tables read (`SET
        /// 'weir.sql.broker'` changes it in the session); default: the
        /// `--config` file's, else mqtt://localhost:1883.
        #[arg(long)]
        broker: Option<String>,
        /// A gateway.toml whose `[broker]` (URL, user, password, TLS files)
        /// live queries use: on a gateway, `--config /etc/weir/gateway.toml`.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// User functions in WebAssembly (docs/functions.md).
    Functions {
        /// What to do.
        #[command(subcommand)]
        action: FunctionsCmd,
    },
    /// Write a deterministic synthetic input.
    Gen {
        /// The workload.
        #[command(subcommand)]
        workload: Workload,
    },
}

/// `weir functions` commands.
#[derive(Subcommand, Debug)]
pub enum FunctionsCmd {
    /// Write the pipeline with its functions' modules embedded (base64 and
    /// SHA-256), ready for `weir fleet sign`: a signed update then carries
    /// the modules.
    Embed {
        /// The pipeline file (TOML).
        #[arg(long, short)]
        pipeline: PathBuf,
        /// Write here (default: stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// `weir fleet` commands.
#[cfg(feature = "host-tools")]
#[derive(Subcommand, Debug)]
pub enum Fleet {
    /// Write a new Ed25519 signing key pair into DIR.
    Keygen {
        /// The folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a pipeline file as update VERSION for the given gateways.
    Sign {
        /// The private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// The update's version: 1 to 2^53 - 1, above every version the
        /// targets accepted before.
        #[arg(long)]
        version: u64,
        /// Target gateway ids (repeat the flag).
        #[arg(long = "gateway", required = true)]
        gateways: Vec<String>,
        /// The pipeline file.
        pipeline: PathBuf,
        /// Where to write the document (default `<pipeline>.v<N>.update`).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Publish a signed document to `weir/<id>/pipeline/set` (QoS 1).
    Push {
        /// The broker, mqtt://HOST:PORT.
        #[arg(long)]
        broker: String,
        /// The gateway id.
        #[arg(long)]
        gateway: String,
        /// The document `weir fleet sign` wrote.
        file: PathBuf,
        /// Wait for the gateway's status (applied, rejected, rolled back).
        #[arg(long)]
        wait: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Print every gateway's pipeline version and last update result.
    Status {
        /// The broker, mqtt://HOST:PORT.
        #[arg(long)]
        broker: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
}

/// Synthetic workloads.
#[derive(Subcommand, Debug)]
pub enum Workload {
    /// The benchmark workload W1 (docs/w1.md): `sensor,ts_ms,value` rows.
    W1 {
        /// Number of events.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// One simulated pump, 8 channels at 1 Hz, with a labelled
    /// multi-sensor fault over the third quarter
    /// (`pump,ts,flow,p_in,p_out,current,vib1,vib2,temp,rpm,fault`), for
    /// examples/pump_health.toml.
    Pump {
        /// Samples (1 s apart).
        #[arg(long, default_value_t = 2000)]
        samples: u64,
        /// The fault: cavitation, bearing or valve.
        #[arg(long, default_value = "bearing")]
        fault: crate::gen::PumpFault,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", error_line(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

/// The message `weir` prints for a failed command: `weir: error: …`,
/// unless the message is already a located diagnostic
/// (`file:line:column: error: …`), which is printed as it is.
fn error_line(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or("");
    if first.contains(": error: ") {
        msg.to_string()
    } else {
        format!("weir: error: {msg}")
    }
}

/// The input of `weir replay`: a file, or standard input for `-`.
fn open_in(input: &Path) -> anyhow::Result<Box<dyn io::Read + Send>> {
    Ok(if input.as_os_str() == "-" {
        // Locked per read (the replay reads in 1 MiB blocks): a cascade
        // reads its input on a thread of its own.
        Box::new(io::stdin())
    } else {
        Box::new(
            File::open(input)
                .map_err(|e| anyhow::anyhow!("cannot open input {}: {e}", input.display()))?,
        )
    })
}

fn open_out(path: Option<&Path>) -> io::Result<Box<dyn Write>> {
    Ok(match path {
        None => Box::new(BufWriter::with_capacity(1 << 16, io::stdout().lock())),
        Some(p) if p.as_os_str() == "-" => {
            Box::new(BufWriter::with_capacity(1 << 16, io::stdout().lock()))
        }
        // not-state: a report the user asked for, not state weir relies on.
        Some(p) => Box::new(BufWriter::with_capacity(1 << 16, File::create(p)?)),
    })
}

fn config_error(e: ConfigError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Runs one parsed command.
///
/// # Errors
/// Anything that stops the command, already phrased for the user.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        #[cfg(feature = "host-tools")]
        Command::Fleet { action } => cmd_fleet(action),
        Command::Check {
            store: Some(dir), ..
        } => cmd_check_store(&dir),
        Command::Check { file, .. } => {
            cmd_check(&file.expect("clap requires FILE without --store"))
        }
        #[cfg(feature = "host-tools")]
        Command::Bundle {
            board,
            out,
            binary,
            pipeline,
            id,
            force,
        } => {
            crate::bundle::main(&crate::bundle::Options {
                board,
                out,
                binary,
                pipeline,
                id,
                force,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config, pipeline } => cmd_run(&config, pipeline.as_deref()),
        #[cfg(feature = "demo")]
        Command::Demo {
            duration,
            speed,
            data_dir,
        } => crate::demo::main(duration.as_deref(), speed, data_dir),
        Command::Deadletters { config, last } => cmd_deadletters(&config, last),
        Command::Functions {
            action: FunctionsCmd::Embed { pipeline, output },
        } => cmd_functions_embed(&pipeline, output.as_deref()),
        Command::Sql {
            init,
            broker,
            config,
        } => cmd_sql(init.as_deref(), broker, config.as_deref()),
        Command::Gen { workload } => cmd_gen(workload),
        Command::Replay {
            pipeline,
            input,
            output,
            source,
            show_bad,
        } => cmd_replay(
            &pipeline,
            input.as_deref(),
            output.as_deref(),
            source.as_deref(),
            show_bad,
        ),
    }
}

/// `weir fleet …`: the operator's side of signed updates.
#[cfg(feature = "host-tools")]
fn cmd_fleet(action: Fleet) -> anyhow::Result<ExitCode> {
    use std::time::Duration;
    match action {
        Fleet::Keygen { out } => crate::fleet::keygen(&out)?,
        Fleet::Sign {
            key,
            version,
            gateways,
            pipeline,
            output,
        } => {
            let doc = crate::fleet::sign(&key, version, &gateways, &pipeline)?;
            let out =
                output.unwrap_or_else(|| pipeline.with_extension(format!("v{version}.update")));
            crate::fsutil::write_atomic(&out, &doc, 0o644)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
            println!(
                "{} ({} bytes, version {version}, for {})",
                out.display(),
                doc.len(),
                gateways.join(", ")
            );
        }
        Fleet::Push {
            broker,
            gateway,
            file,
            wait,
            timeout,
        } => {
            match crate::fleet::push(&broker, &gateway, &file, wait, Duration::from_secs(timeout))?
            {
                Some(s) => {
                    println!("{}", crate::fleet::status_line(&s));
                    if s.last_result != weir_cloud_sync::update::UpdateResult::Applied {
                        return Ok(ExitCode::from(1));
                    }
                }
                None => println!("published to weir/{gateway}/pipeline/set (acknowledged)"),
            }
        }
        Fleet::Status { broker, timeout } => {
            let all = crate::fleet::status(
                &broker,
                Duration::from_millis(500),
                Duration::from_secs(timeout),
            )?;
            for s in &all {
                println!("{}", crate::fleet::status_line(s));
            }
            if all.is_empty() {
                println!("no gateway has published a status");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `weir check --store DIR`: reads a gateway's store without changing it.
fn cmd_check_store(dir: &Path) -> anyhow::Result<ExitCode> {
    let r = crate::check_store::check(dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot read the store: {e}", dir.display()))?;
    for l in &r.lines {
        println!("{l}");
    }
    if r.ok {
        println!("store ok");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "store damaged: weir moves such a store aside (weir.redb.damaged-<time>) and starts a new one"
    );
    Ok(ExitCode::from(1))
}

/// `weir check FILE`: a gateway file (with its pipeline), a board profile,
/// a SQL or a TOML pipeline, recognised by content.
fn cmd_check(file: &Path) -> anyhow::Result<ExitCode> {
    if is_gateway_file(file) {
        let g = crate::gateway::load(file).map_err(config_error)?;
        let pf = pipeline_file::load(&g.pipeline).map_err(config_error)?;
        let mqtt = pf.mqtt.iter().flatten().count();
        if mqtt == 0 {
            anyhow::bail!(
                "{}: the pipeline has no [source.mqtt] table, so weir run would have nothing to subscribe to",
                g.pipeline.display()
            );
        }
        println!(
            "{}: ok: gateway `{}`, broker {}:{}{}, {} durability, data in {}; pipeline `{}` ({}): {mqtt} MQTT source(s)",
            file.display(),
            g.id,
            g.broker.host,
            g.broker.port,
            if g.broker.tls { " (TLS)" } else { "" },
            g.durability,
            g.data_dir.display(),
            pf.spec.name,
            g.pipeline.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if is_board_profile(file) {
        let board = weir_boards::profile::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "{}: ok: board `{}` ({}): {} bus(es), {} sensor(s)",
            file.display(),
            board.name,
            board.target,
            board.buses.len(),
            board.sensors.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if crate::sql::is_sql(file) {
        let p = crate::sql::load(file).map_err(config_error)?;
        if p.explain {
            print!("{}", p.query.explain);
        }
        let cols: Vec<&str> = match &p.query.top_n {
            Some(t) => t.names.iter().map(String::as_str).collect(),
            None => p.query.columns.iter().map(|c| c.name.as_str()).collect(),
        };
        let ops = &p.pipeline.spec.operators;
        let windows = ops
            .iter()
            .filter(|o| matches!(o.kind, OperatorKind::Window(_)))
            .count();
        println!(
            "{}: ok: SQL pipeline `{}`: source `{}`, {}, result columns {}",
            file.display(),
            p.pipeline.spec.name,
            p.pipeline.spec.sources[0].name,
            {
                let detectors = ops
                    .iter()
                    .filter(|o| matches!(o.kind, OperatorKind::Detect(_)))
                    .count();
                // A query without GROUP BY runs on one operator of its own.
                let functions = match p.query.per_row {
                    Some(_) => 0,
                    None => ops.len() - windows - detectors,
                };
                let mut parts = vec![match &p.query.per_row {
                    Some(r) if r.over.is_some() => {
                        "a row per row with its OVER aggregates, once the watermark passes it (keyed state)".to_string()
                    }
                    Some(r) if r.windows.is_some() => {
                        "each row as it comes, with its windows' bounds (no state)".to_string()
                    }
                    Some(_) => "each row as it comes (no window, no state)".to_string(),
                    None => format!("{windows} window operator(s)"),
                }];
                if detectors > 0 {
                    parts.push(format!("{detectors} detector(s)"));
                }
                if functions > 0 {
                    parts.push(format!("{functions} keyed function(s)"));
                }
                if let Some(t) = &p.query.top_n {
                    parts.push(format!("a window Top-N of {} row(s) per window", t.n));
                }
                parts.join(", ")
            },
            cols.join(", ")
        );
        if let Err(why) = p.agent_can_run() {
            println!("note: {why}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let pf = pipeline_file::load(file).map_err(config_error)?;
    let windows = pf
        .spec
        .operators
        .iter()
        .filter(|o| matches!(o.kind, OperatorKind::Window(_)))
        .count();
    println!(
        "{}: ok: pipeline `{}`: {} source(s), {} window operator(s), {} detect operator(s)",
        file.display(),
        pf.spec.name,
        pf.spec.sources.len(),
        windows,
        pf.spec.operators.len() - windows
    );
    Ok(ExitCode::SUCCESS)
}

/// `weir functions embed`: a `.sql` file with its modules embedded.
fn cmd_functions_embed(pipeline: &Path, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(pipeline)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", pipeline.display()))?;
    let out = crate::functions::embed(&pipeline.display().to_string(), &text)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut w = open_out(output)?;
    w.write_all(out.as_bytes())?;
    w.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `weir sql`: the interactive shell, after the statements of `init`. A
/// Ctrl-C ends a live query (and the shell when none runs).
fn cmd_sql(
    init: Option<&Path>,
    broker: Option<String>,
    config: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let login = match config {
        Some(c) => Some(crate::gateway::load(c).map_err(config_error)?.broker),
        None => None,
    };
    let broker = broker.unwrap_or_else(|| match &login {
        Some(b) => {
            // An IPv6 address in brackets, as parse_url reads it back.
            let host = if b.host.contains(':') {
                format!("[{}]", b.host)
            } else {
                b.host.clone()
            };
            let scheme = if b.tls { "mqtts" } else { "mqtt" };
            format!("{scheme}://{host}:{}", b.port)
        }
        None => crate::sql::shell::DEFAULT_BROKER.to_string(),
    });
    let int: &'static crate::sql::live::Interrupt = Box::leak(Box::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("weir-sql-signal".into())
        .spawn(move || {
            rt.block_on(async {
                while tokio::signal::ctrl_c().await.is_ok() {
                    if int.running.load(std::sync::atomic::Ordering::Relaxed) {
                        int.stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        std::process::exit(130);
                    }
                }
            })
        })?;
    let stdin = io::stdin();
    let prompt = std::io::IsTerminal::is_terminal(&stdin);
    let init_text = match init {
        Some(p) => {
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?
                + "\n"
        }
        None => String::new(),
    };
    let input = io::Read::chain(init_text.as_bytes(), stdin.lock());
    crate::sql::shell::run_with(
        input,
        io::stdout().lock(),
        prompt,
        &broker,
        login.as_ref(),
        int,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `weir gen`: a generated workload as CSV.
fn cmd_gen(workload: Workload) -> anyhow::Result<ExitCode> {
    match workload {
        Workload::W1 {
            events,
            seed,
            output,
        } => {
            let mut out = open_out(output.as_deref())?;
            crate::gen::W1::new(events, seed).write(&mut out)?;
            out.flush()?;
        }
        Workload::Pump {
            samples,
            fault,
            seed,
            output,
        } => {
            let mut out = open_out(output.as_deref())?;
            crate::gen::Pump::new(samples, seed, fault).write(&mut out)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `weir replay` of a TOML pipeline (a SQL one goes to [`cmd_replay_sql`]).
fn cmd_replay(
    pipeline: &Path,
    input: Option<&Path>,
    output: Option<&Path>,
    source: Option<&str>,
    show_bad: u64,
) -> anyhow::Result<ExitCode> {
    if crate::sql::is_sql(pipeline) {
        return cmd_replay_sql(pipeline, input, output, show_bad);
    }
    let Some(input) = input else {
        anyhow::bail!("--input is required with a TOML pipeline");
    };
    let pf = pipeline_file::load(pipeline).map_err(config_error)?;
    let src = match source {
        None => 0,
        Some(name) => pf
            .spec
            .sources
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no source named `{name}` (sources: {})",
                    pipeline.display(),
                    pf.spec
                        .sources
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
    };
    if pf.spec.sources.is_empty() {
        anyhow::bail!(
            "{}: the pipeline has no [[source]] to read rows into",
            pipeline.display()
        );
    }
    let reader = open_in(input)?;
    let out = open_out(output)?;
    let mut shown = 0u64;
    let mut by_reason: std::collections::BTreeMap<String, u64> = Default::default();
    let name = input.display().to_string();
    let (summary, engine) = replay::replay(&pf, src, reader, out, |bad, line| {
        *by_reason.entry(reason_name(&bad.error)).or_default() += 1;
        if shown < show_bad {
            shown += 1;
            let text = String::from_utf8_lossy(&line[..line.len().min(120)]);
            eprintln!("{name}:{}: {} (row: {text:?})", bad.line, bad.error);
        }
    })?;
    eprintln!("weir replay: {summary}");
    if !by_reason.is_empty() {
        let parts: Vec<String> = by_reason.iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!("weir replay: bad rows by reason: {}", parts.join(" "));
    }
    crate::functions::print_report(&pf.functions, show_bad, |k| engine.key_name(k).to_string());
    print_engine_line(&engine);
    Ok(ExitCode::SUCCESS)
}

/// `weir replay`'s last line: what the engine took, refused and dropped.
fn print_engine_line(engine: &weir_core::engine::Engine) {
    let st = engine.stats();
    let mut dropped = String::new();
    if st.filtered > 0 {
        dropped += &format!(", {} filtered", st.filtered);
    }
    if st.null_computed > 0 {
        dropped += &format!(", {} with a NULL field", st.null_computed);
    }
    let over: u64 = (0..)
        .map_while(|op| engine.op_stats(op))
        .map(|s| s.distinct_overflow)
        .sum();
    if over > 0 {
        dropped += &format!(
            ", {over} windows over {} distinct values (COUNT(DISTINCT …) is NULL there)",
            weir_core::distinct::DISTINCT_CAP
        );
    }
    eprintln!(
        "weir replay: engine: {} accepted, {} rejected{dropped}, {} keys, peak RSS {} KiB",
        st.accepted,
        st.rejected_total(),
        engine.key_count(),
        replay::peak_rss_kib().map_or("?".into(), |k| k.to_string())
    );
}

/// `weir replay` of a SQL pipeline: result rows with a header, or the plan
/// for `EXPLAIN`.
fn cmd_replay_sql(
    pipeline: &Path,
    input: Option<&Path>,
    output: Option<&Path>,
    show_bad: u64,
) -> anyhow::Result<ExitCode> {
    let p = crate::sql::load(pipeline).map_err(config_error)?;
    if p.explain {
        let mut out = open_out(output)?;
        out.write_all(p.query.explain.as_bytes())?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(why) = p.file_refusal() {
        anyhow::bail!("{}: {why}", pipeline.display());
    }
    let input: PathBuf = match (input, &p.input_path) {
        (Some(i), _) => i.to_path_buf(),
        // A relative 'path' is relative to the pipeline file.
        (None, Some(path)) => pipeline.parent().unwrap_or(Path::new(".")).join(path),
        (None, None) => anyhow::bail!(
            "{}: no input: pass --input FILE.csv or give the source table 'path'",
            pipeline.display()
        ),
    };
    let reader = open_in(&input)?;
    // INSERT INTO a filesystem table writes to its 'path' (relative to the
    // pipeline file) unless --output says otherwise.
    let sink_path = p
        .sink
        .as_ref()
        .filter(|s| s.connector == "filesystem")
        .and_then(|s| s.path.as_ref())
        .map(|s| pipeline.parent().unwrap_or(Path::new(".")).join(s));
    let out = open_out(output.or(sink_path.as_deref()))?;
    let name = input.display().to_string();
    let mut shown = 0u64;
    let (summary, engine) = crate::sql::exec::replay(&p, reader, out, |bad, line| {
        if shown < show_bad {
            shown += 1;
            let text = String::from_utf8_lossy(&line[..line.len().min(120)]);
            eprintln!("{name}:{}: {} (row: {text:?})", bad.line, bad.error);
        }
    })?;
    if p.query.per_row.as_ref().is_some_and(|r| r.over.is_some()) {
        // Rows one by one, through the engine's OVER operator: late rows
        // are dropped.
        eprintln!(
            "weir replay: {} rows in {:.3} s: {} result rows, {} late, {} bad rows",
            summary.rows,
            summary.elapsed.as_secs_f64(),
            summary.windows,
            summary.late,
            summary.bad_rows
        );
        return Ok(ExitCode::SUCCESS);
    }
    if p.query.per_row.is_some() {
        // Rows one by one: written from the decoded rows, without the
        // engine (no windows, nothing late).
        eprintln!(
            "weir replay: {} rows in {:.3} s: {} result rows, {} bad rows",
            summary.rows,
            summary.elapsed.as_secs_f64(),
            summary.windows,
            summary.bad_rows
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("weir replay: {summary}");
    crate::functions::print_report(&p.pipeline.functions, show_bad, |k| {
        engine.key_name(k).to_string()
    });
    print_engine_line(&engine);
    Ok(ExitCode::SUCCESS)
}

/// Logs to standard error; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    init_logging_filter("info");
}

/// Logs to standard error; `RUST_LOG` filters (default `default`).
///
/// `RUST_LOG` takes comma-separated `level` and `target=level` directives
/// (`info`, `warn,weir_agent::run=debug`): tracing-subscriber's `Targets`
/// filter, which needs no regular-expression engine (about 0.5 MB less in
/// a gateway's binary than `EnvFilter`). A value it cannot parse is
/// reported and the default is used.
pub fn init_logging_filter(default: &str) {
    use tracing_subscriber::filter::Targets;
    let mut bad = None;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => v.parse::<Targets>().unwrap_or_else(|e| {
            bad = Some(format!(
                "RUST_LOG={v:?} is not a log filter ({e}); using {default:?}"
            ));
            default.parse().unwrap_or_default()
        }),
        _ => default.parse().unwrap_or_default(),
    };
    let ansi = std::io::IsTerminal::is_terminal(&io::stderr());
    let log = crate::log::StderrLog::new(filter, ansi);
    if tracing::subscriber::set_global_default(log).is_ok() {
        if let Some(msg) = bad {
            tracing::warn!("{msg}");
        }
    }
}

fn cmd_run(config: &Path, pipeline: Option<&Path>) -> anyhow::Result<ExitCode> {
    init_logging();
    let cfg = crate::gateway::load(config).map_err(config_error)?;
    let pf = pipeline_file::load(pipeline.unwrap_or(&cfg.pipeline)).map_err(config_error)?;
    let s = crate::run::run(cfg, pf, |_| {})?;
    tracing::info!(
        readings = s.readings,
        published = s.published,
        final_checkpoint = s.final_checkpoint,
        "stopped"
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_deadletters(config: &Path, last: usize) -> anyhow::Result<ExitCode> {
    let cfg = crate::gateway::load(config).map_err(config_error)?;
    let path = cfg.data_dir.join("weir.redb");
    if !path.exists() {
        anyhow::bail!(
            "{}: no store yet (weir run has not run with this data_dir)",
            path.display()
        );
    }
    let store = match crate::store::StoreConfig::default().build(&path) {
        Ok(s) => s,
        Err(e) => {
            let hint = match cfg.metrics {
                Some(a) => format!("while weir run is running, read http://{a}/deadletters"),
                None => "stop weir run first, or turn [metrics] on and read /deadletters".into(),
            };
            anyhow::bail!("{e}\n  help: {hint}");
        }
    };
    let all = store.dead_letters()?;
    let mut out = io::stdout().lock();
    for (_, d) in all.iter().skip(all.len().saturating_sub(last)) {
        writeln!(out, "{}", crate::run::metrics::dead_json(d))?;
    }
    eprintln!(
        "weir deadletters: {} shown of {} kept in {}",
        all.len().min(last),
        all.len(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A board profile has a `[board]` table; anything else is a pipeline.
/// A gateway file is named `gateway.toml` or has a `[broker]` table.
fn is_gateway_file(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "gateway.toml")
        || std::fs::read_to_string(path).is_ok_and(|t| t.lines().any(|l| l.trim() == "[broker]"))
}

fn is_board_profile(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.lines().any(|l| l.trim() == "[board]"))
}

fn reason_name(e: &RowError) -> String {
    match e {
        RowError::ColumnCount => "column_count".into(),
        RowError::BadTimestamp => "bad_timestamp".into(),
        RowError::BadNumber => "bad_number".into(),
        RowError::NotUtf8 => "not_utf8".into(),
        RowError::TooLong => "too_long".into(),
        RowError::BadQuote => "bad_quote".into(),
        RowError::Rejected(r) => Reject::name(*r).into(),
        RowError::Function(_) => "function".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::error_line;

    #[test]
    fn a_located_diagnostic_is_printed_once_without_a_second_error_prefix() {
        let located =
            "p.toml:1:5: error: string values must be quoted\n  help: see docs/pipeline.md";
        assert_eq!(error_line(located), located);
        assert_eq!(
            error_line("cannot bind 127.0.0.1:1883"),
            "weir: error: cannot bind 127.0.0.1:1883"
        );
    }
}
