//! `nutcracker` (Debian's twemproxy), the oracle of the routers' twemproxy compatibility:
//! started on a config file the test wrote, its stats on loopback.

use std::path::Path;

use anyhow::Result;

use super::{find_binary, ServerProcess};

/// Starts `nutcracker -c conf -s stats_port -a 127.0.0.1` in `dir`, its output in
/// `dir/nutcracker.log`. Pick `stats_port` before any server the test will stop, so that it
/// cannot be that server's freed port.
///
/// # Errors
/// When `nutcracker` is not installed (naming the Debian package) or cannot be executed.
pub fn start_nutcracker(conf: &Path, dir: &Path, stats_port: u16) -> Result<ServerProcess> {
    ServerProcess::spawn(
        "nutcracker",
        find_binary("nutcracker", "nutcracker")?,
        vec![
            "-c".into(),
            conf.as_os_str().to_owned(),
            "-s".into(),
            stats_port.to_string().into(),
            "-a".into(),
            "127.0.0.1".into(),
        ],
        dir,
        dir.join("nutcracker.log"),
        Vec::new(),
    )
}
