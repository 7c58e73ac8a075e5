//! `ocean-lvs-sync`: the crate's own binary, `ocean lvs-sync` without the rest of `ocean`
//! (the real-kernel test boots it in a VM). `--dump-netlink-hex` prints the raw netlink
//! replies of a services and a destinations dump, one datagram per line, for test fixtures.

use clap::Parser;
use ocean_lvs_sync::netlink::NetlinkIpvs;

#[derive(Debug, Parser)]
#[command(
    name = "ocean-lvs-sync",
    about = "Keeps the kernel's IPVS table equal to the lvs table"
)]
struct Cli {
    #[command(flatten)]
    args: ocean_lvs_sync::Args,
    /// Print the raw netlink replies of a GET_SERVICE and a GET_DEST dump as hex and exit.
    #[arg(long, hide = true)]
    dump_netlink_hex: bool,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ocean-lvs-sync: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    if cli.dump_netlink_hex {
        let mut n = NetlinkIpvs::open()?;
        for d in n.raw_dumps()? {
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            println!("NLHEX {hex}");
        }
        return Ok(());
    }
    let config = cli.args.into_config()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    ocean_core::notify::expect("lvs");
    rt.block_on(async {
        let cancel = ocean_core::signals::install()?;
        ocean_core::notify::spawn_watchdog(cancel.clone());
        ocean_lvs_sync::run(config, cancel).await
    })
}
