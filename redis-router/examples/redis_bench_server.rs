//! Runs the router from its command-line flags (the benchmark uses it until `ocean
//! redis-router` is wired into the `ocean` binary). Installs the Prometheus recorder, as
//! the binary does, so metrics cost what they cost in production.

use clap::Parser;

/// The allocator of the `ocean` binary (src/main.rs), so that the bench measures the proxy
/// users run.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: ocean_redis_router::Args,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ocean_core::metrics::handle();
    let cancel = ocean_core::signals::install()?;
    ocean_redis_router::run(cli.args.into_config()?, cancel).await
}
