//! Client passwords from a file (`--password-file`), end to end: the flags parsed as the
//! binary parses them, a real Redis Cluster behind, redis-cli in front.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use common::{redis_cli, redis_cli_opts};
use ocean_tests::servers::RedisCluster;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: ocean_redis_router::Args,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_must_auth_with_the_password_from_the_file() -> Result<()> {
    let cluster = RedisCluster::start(3, 0).await?;
    let dir = tempfile::tempdir()?;
    let pw_file = dir.path().join("router.pw");
    // An editor's trailing newline is not part of the password.
    std::fs::write(&pw_file, "s3cret pw\n")?;
    let seed = cluster.master_addrs()[0].to_string();
    let cli = Cli::try_parse_from([
        "ocean",
        "--listen",
        "127.0.0.1:0",
        "--seed",
        &seed,
        "--threads",
        "0",
        "--password-file",
        pw_file.to_str().unwrap(),
    ])?;
    let config = cli.args.into_config()?;
    assert!(!format!("{config:?}").contains("s3cret"));
    let cancel = CancellationToken::new();
    let running = ocean_redis_router::start(config, cancel.clone()).await?;
    let addr = running.listen_addr.unwrap();
    let authed = ["-a", "s3cret pw", "--no-auth-warning"];

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = redis_cli_opts(addr, &authed, &["INFO"], None).await?;
        if info.contains("slots_covered:16384") {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("router never got a full slot map: {info}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = redis_cli(addr, &["SET", "k", "v"]).await?;
    assert!(out.contains("NOAUTH"), "{out}");
    let out = redis_cli_opts(
        addr,
        &["-a", "s3cret pw\n", "--no-auth-warning"],
        &["GET", "k"],
        None,
    )
    .await?;
    // redis-cli reports the failed AUTH on stderr and sends GET anyway: still refused.
    assert!(
        out.contains("NOAUTH") || out.contains("WRONGPASS"),
        "with the newline the password is wrong: {out}"
    );
    assert_eq!(
        redis_cli_opts(addr, &authed, &["SET", "k", "v"], None)
            .await?
            .trim(),
        "OK"
    );
    assert_eq!(
        redis_cli_opts(addr, &authed, &["GET", "k"], None)
            .await?
            .trim(),
        "v"
    );
    cancel.cancel();
    Ok(())
}
