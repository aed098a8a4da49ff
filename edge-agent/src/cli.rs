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
        /// The pipeline file (TOML).
        #[arg(long, short)]
        pipeline: PathBuf,
        /// The input CSV ('-' for standard input).
        #[arg(long, short)]
        input: PathBuf,
        /// Where to write results (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Which source the rows belong to (default: the first).
        #[arg(long)]
        source: Option<String>,
        /// How many bad rows to print before only counting them.
        #[arg(long, default_value_t = 10)]
        show_bad: u64,
    },
    /// Validate a pipeline file or a board profile (`boards/<name>/board.toml`);
    /// errors name the line and what to do.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Build the tarball a gateway is flashed with: a static, stripped weir for
    /// the board, its config, a hardened systemd unit, broker config and a fresh
    /// device identity (the public key is printed on stdout).
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
    /// Write a deterministic synthetic input.
    Gen {
        /// The workload.
        #[command(subcommand)]
        workload: Workload,
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
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weir: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn open_out(path: Option<&Path>) -> io::Result<Box<dyn Write>> {
    Ok(match path {
        None => Box::new(BufWriter::with_capacity(1 << 16, io::stdout().lock())),
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
        Command::Check { file } => {
            if is_board_profile(&file) {
                let board =
                    weir_boards::profile::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
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
            let pf = pipeline_file::load(&file).map_err(config_error)?;
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
        Command::Gen {
            workload:
                Workload::W1 {
                    events,
                    seed,
                    output,
                },
        } => {
            let mut out = open_out(output.as_deref())?;
            crate::gen::W1::new(events, seed).write(&mut out)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            pipeline,
            input,
            output,
            source,
            show_bad,
        } => {
            let pf = pipeline_file::load(&pipeline).map_err(config_error)?;
            let src = match &source {
                None => 0,
                Some(name) => pf
                    .spec
                    .sources
                    .iter()
                    .position(|s| &s.name == name)
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
            let reader: Box<dyn io::Read> =
                if input.as_os_str() == "-" {
                    Box::new(io::stdin().lock())
                } else {
                    Box::new(File::open(&input).map_err(|e| {
                        anyhow::anyhow!("cannot open input {}: {e}", input.display())
                    })?)
                };
            let out = open_out(output.as_deref())?;
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
                let parts: Vec<String> =
                    by_reason.iter().map(|(k, v)| format!("{k}={v}")).collect();
                eprintln!("weir replay: bad rows by reason: {}", parts.join(" "));
            }
            let st = engine.stats();
            eprintln!(
                "weir replay: engine: {} accepted, {} rejected, {} keys, peak RSS {} KiB",
                st.accepted,
                st.rejected_total(),
                engine.key_count(),
                replay::peak_rss_kib().map_or("?".into(), |k| k.to_string())
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A board profile has a `[board]` table; anything else is a pipeline.
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
        RowError::Rejected(r) => Reject::name(*r).into(),
    }
}
