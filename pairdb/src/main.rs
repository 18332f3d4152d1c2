//! `pairdb dev | storage | coordinator | gateway`.

use clap::Parser;
use pairdb::cli::{Cli, Command};
use pairdb::{config_file, role, telemetry};

/// mimalloc: every request allocates on several threads (gateway, coordinator, storage nodes);
/// glibc's arenas contend under that load, mimalloc's per-thread heaps do not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line: "opening …: reading …: denied".
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // Before any thread exists: the file only supplies environment defaults.
    config_file::apply(&args)?;
    let cli = Cli::parse_from(args);
    // Before the runtimes start their threads (each has its own allocator heaps); reported once
    // logging is up.
    let thp = disable_transparent_huge_pages();
    let nofile = raise_open_file_limit();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Storage(_)) {
        // The node serves on a runtime of its own; this one only serves metrics and waits for
        // signals.
        runtime.worker_threads(1);
    }
    let runtime = runtime.enable_all().build()?;
    let service = match cli.command {
        Command::Dev(_) => "pairdb-dev",
        Command::Storage(_) => "pairdb-storage",
        Command::Coordinator(_) => "pairdb-coordinator",
        Command::Gateway(_) => "pairdb-gateway",
    };
    // Inside the runtime: the span exporter's channel lives on it.
    let telemetry = {
        let _entered = runtime.enter();
        telemetry::init(service)?
    };
    if let Err(error) = thp {
        tracing::debug!(%error, "cannot disable transparent huge pages");
    }
    if let Err(error) = nofile {
        tracing::debug!(%error, "cannot raise the open-file limit");
    }
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(a) => role::dev::run(a).await,
            Command::Storage(a) => role::storage::run(a).await,
            Command::Coordinator(a) => role::coordinator::run(a).await,
            Command::Gateway(a) => role::gateway::run(a).await,
        }
    });
    telemetry.shutdown();
    result
}

/// Keeps this process's memory (and its children's) out of transparent huge pages.
/// mimalloc asks for huge pages where the kernel allows them on request, and a page fault that
/// must find and zero 2 MiB stalls the faulting thread for milliseconds — measured as the
/// worst LSM writes under `make bench-engine`. Best effort: a kernel that refuses changes nothing.
fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: `prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)` only reads its integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard one: a storage node keeps every table of its
/// LSM engine open (one descriptor each, as RocksDB does by default), and a large node has
/// thousands. Best effort: the limit stays as it was where the system refuses.
fn raise_open_file_limit() -> std::io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes only into the `rlimit` it is given, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur >= limit.rlim_max
    {
        return Ok(());
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `setrlimit` only reads the `rlimit` it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
