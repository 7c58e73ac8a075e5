//! The `ocean` binary: parses flags and dispatches to a daemon's `run`.

mod status;
mod up;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// mimalloc, not glibc's malloc: control's sync of 100k tasks allocates millions of small
/// strings and records, and with mimalloc it runs about 1.5x faster with the same peak
/// (see benches/README.md). The proxies' hot paths hardly allocate either way.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ocean: the data plane of a Mesos/Marathon platform.
///
/// `ocean up` runs control and every proxy in one process from one config (with no
/// arguments, the bundled example). `ocean control` runs the table service alone.
#[derive(Debug, Parser)]
#[command(
    name = "ocean",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// Log filter (RUST_LOG syntax), e.g. `info` or `ocean_control=debug,info`.
    /// RUST_LOG in the environment wins.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    /// Log format: `text` or `json`.
    #[arg(long, global = true, default_value = "text")]
    log_format: ocean_core::logging::LogFormat,
    /// On SIGTERM, how long open connections get to finish what is in flight before the
    /// rest are closed and the process exits 0 (keep it below systemd's TimeoutStopSec).
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: std::time::Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch Marathon (or a file in its JSON), derive one table per proxy kind, serve them.
    Control(Box<ocean_control::config::Args>),
    /// Answer Mesos-DNS names from the `dns` table (UDP and TCP), with Mesos-DNS's HTTP API.
    Dns(Box<ocean_dns::config::Args>),
    /// One plain-Redis port in front of a Redis Cluster (slots, MOVED/ASK, multi-key splits).
    RedisRouter(Box<ocean_redis_router::Args>),
    /// Memcached pools with ketama, replica sets and failover (mcrouter-style).
    MemcachedRouter(Box<ocean_memcached_router::Args>),
    /// MySQL logins as JOBNAME from the job's task IPs, routed to the granted database.
    MysqlProxy(Box<ocean_mysql_proxy::Args>),
    /// Keep the kernel's IPVS table equal to the virtual services Marathon apps declare.
    LvsSync(Box<ocean_lvs_sync::Args>),
    /// Run control and every proxy in one process from one config file.
    Up(UpArgs),
    /// Print control's status (tables, lagging subscribers, problems, last sync) as text or JSON.
    Status(status::StatusArgs),
}

#[derive(Debug, Args)]
struct UpArgs {
    /// The `ocean up` config (shape: examples/up.toml). Without it, the bundled example runs.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    ocean_core::logging::init(&cli.log, cli.log_format);
    // Every daemon holds a descriptor per client and per backend connection.
    match ocean_core::daemon::raise_nofile_limit() {
        Ok(n) => tracing::debug!(open_files = n, "RLIMIT_NOFILE"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ocean: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let drain_timeout = cli.drain_timeout;
    // What must have its first table before systemd hears READY=1 (`ocean up` says its own).
    let component = match &cli.command {
        Command::Control(_) => Some("control"),
        Command::Dns(_) => Some("dns"),
        Command::RedisRouter(_) => Some("redis"),
        Command::MemcachedRouter(_) => Some("memcached"),
        Command::MysqlProxy(_) => Some("mysql"),
        Command::LvsSync(_) => Some("lvs"),
        Command::Up(_) | Command::Status(_) => None,
    };
    if let Some(c) = component {
        ocean_core::notify::expect(c);
    }
    let result = runtime.block_on(async move {
        let cancel = ocean_core::signals::install()?;
        ocean_core::reload::describe();
        ocean_core::notify::spawn_watchdog(cancel.clone());
        let daemon = async {
            match cli.command {
                Command::Control(a) => ocean_control::run(a.into_config()?, cancel.clone()).await,
                Command::Dns(a) => ocean_dns::run(a.into_config()?, cancel.clone()).await,
                Command::RedisRouter(a) => {
                    ocean_redis_router::run(a.into_config()?, cancel.clone()).await
                }
                Command::MemcachedRouter(a) => {
                    ocean_memcached_router::run(a.into_config()?, cancel.clone()).await
                }
                Command::MysqlProxy(a) => {
                    ocean_mysql_proxy::run(a.into_config()?, cancel.clone()).await
                }
                Command::LvsSync(a) => ocean_lvs_sync::run(a.into_config()?, cancel.clone()).await,
                Command::Up(a) => up::run(a.config, cancel.clone()).await,
                Command::Status(a) => status::run(a).await,
            }
        };
        tokio::select! {
            r = daemon => r,
            // Connections that outlive --drain-timeout are closed with the runtime.
            () = ocean_core::signals::drain_deadline(cancel.clone(), drain_timeout) => Ok(()),
        }
    });
    // Tasks still open after a drain are dropped here, not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ocean: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
