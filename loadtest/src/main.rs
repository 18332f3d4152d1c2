//! `pairdb-loadtest run SCENARIO.toml`: runs a scenario file against pairdb, prints k6's
//! summary, and exits 0 when every threshold held, 99 when one failed, 1 on any other error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pairdb_client::{Client, NewTenant, RateLimit};
use pairdb_loadtest::{Options, Target, execute, scenario, summary};

#[derive(Parser)]
#[command(
    name = "pairdb-loadtest",
    version,
    about = "k6-style load tests and YCSB workloads against pairdb"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario file.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The scenario file (TOML, k6's shape).
    scenario: PathBuf,
    /// pairdb's URL.
    #[arg(long, env = "PAIRDB_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A tenant API key to run as.
    #[arg(long, env = "PAIRDB_API_KEY")]
    api_key: Option<String>,
    /// Without an API key: the admin key, to create a throwaway tenant for the run.
    #[arg(long, env = "PAIRDB_ADMIN_KEY")]
    admin_key: Option<String>,
    /// Write the summary as JSON (k6's summary-export shape) to this file.
    #[arg(long)]
    summary_export: Option<PathBuf>,
    /// More output: `json=FILE` (one JSON line per one-second sample window) or `html=FILE`
    /// (a self-contained report with charts). Repeatable.
    #[arg(long = "out", value_parser = parse_out)]
    outs: Vec<Out>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone)]
enum Out {
    Json(PathBuf),
    Html(PathBuf),
}

fn parse_out(text: &str) -> Result<Out, String> {
    match text.split_once('=') {
        Some(("json", path)) if !path.is_empty() => Ok(Out::Json(path.into())),
        Some(("html", path)) if !path.is_empty() => Ok(Out::Html(path.into())),
        _ => Err(format!("`{text}`: write json=FILE or html=FILE")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Command::Run(args) = cli.command;
    match runtime.block_on(run(args)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(&args.scenario)
        .with_context(|| format!("reading {}", args.scenario.display()))?;
    let plan = scenario::parse(&text).with_context(|| args.scenario.display().to_string())?;
    let (api_key, tenant) = match (args.api_key, args.admin_key) {
        (Some(key), _) => (key, None),
        (None, Some(admin)) => {
            let id = format!("loadtest-{:08x}", rand::random::<u32>());
            let admin = Client::builder(args.url.clone(), admin).build()?;
            let mut tenant = NewTenant::new(id.clone());
            // A limit that does not throttle the test.
            tenant.rate_limit = Some(RateLimit {
                requests_per_second: 1_000_000_000,
                burst: 1_000_000_000,
            });
            let created = admin
                .create_tenant(&tenant)
                .await
                .context("creating the run's tenant")?;
            (created.api_key, Some(id))
        }
        (None, None) => anyhow::bail!(
            "give --api-key (or PAIRDB_API_KEY), or --admin-key to create a tenant for the run"
        ),
    };
    let options = Options {
        progress: !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..Options::default()
    };
    let target = Target {
        url: args.url.clone(),
        api_key,
    };
    let report = execute(&plan, &target, &options).await?;
    let header = format!(
        "\n  pairdb-loadtest: {} against {}{}\n  scenarios: {}  duration: {:.1}s\n",
        args.scenario.display(),
        args.url,
        tenant.map(|t| format!(" (tenant {t})")).unwrap_or_default(),
        plan.scenarios
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        report.elapsed.as_secs_f64()
    );
    let text = summary::text(&report.recorder, &report.verdicts, &header);
    print!("{text}");
    for out in &args.outs {
        match out {
            Out::Json(path) => {
                let mut lines = String::new();
                for row in report.recorder.windows() {
                    lines.push_str(&serde_json::to_string(&row)?);
                    lines.push('\n');
                }
                std::fs::write(path, lines)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Out::Html(path) => {
                let title = format!("pairdb-loadtest: {}", args.scenario.display());
                let page = pairdb_loadtest::report::html(
                    &report.recorder,
                    &report.verdicts,
                    &title,
                    &text,
                );
                std::fs::write(path, page)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    if let Some(path) = &args.summary_export {
        let json = summary::export(&report.recorder, &report.verdicts);
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.exit_code() == 0 { 0 } else { 99 })
}
