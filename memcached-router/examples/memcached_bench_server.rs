//! Runs the router from its flags, for `benches/memcached.sh` (the `ocean` binary wires
//! the same `Args` as `ocean memcached-router`). Stops on SIGINT or SIGTERM.
//!
//! `cargo run --release -p ocean-memcached-router --example memcached_bench_server -- --listen
//! 127.0.0.1:22200 --pool a=127.0.0.1:22122`

use clap::Parser;
use ocean_memcached_router::Args;
use tokio_util::sync::CancellationToken;

/// The allocator of the `ocean` binary (src/main.rs), so that the bench measures the proxy
/// users run.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn main() -> anyhow::Result<()> {
    let config = Cli::parse().args.into_config()?;
    // BENCH_MULTI_THREAD=N: tokio's multi-thread runtime with N workers (use --threads 0
    // so the router runs on it), to compare with single-threaded workers.
    let rt = match std::env::var("BENCH_MULTI_THREAD")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build()?,
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    rt.block_on(async move {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            stop.cancel();
        });
        ocean_memcached_router::run(config, cancel).await
    })
}
