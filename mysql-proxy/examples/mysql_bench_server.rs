//! `ocean mysql-proxy` as a standalone program for benches/mysql.sh (the `ocean` binary
//! wires the same Args). `--threads 0` (default) runs the `ocean` binary's runtime: a
//! multi_thread one with a worker per CPU. `--threads 1` runs a current_thread runtime,
//! `--threads N` a multi_thread one with N workers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;

/// The allocator of the `ocean` binary (src/main.rs), so that the bench measures the proxy
/// users run.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ocean_mysql_proxy::Args,
    /// Runtime worker threads; 0 = one per CPU (as `ocean`), 1 = current_thread.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ocean_core::logging::init("warn", ocean_core::logging::LogFormat::Text);
    let rt = match cli.threads {
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    let config = cli.args.into_config()?;
    rt.block_on(async move {
        let cancel = ocean_core::signals::install()?;
        ocean_mysql_proxy::run(config, cancel).await
    })
}
