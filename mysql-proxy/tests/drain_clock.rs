//! The drain of a moved database on tokio's paused clock (issue 18): `Registry::sweep` with
//! a table whose primary moved closes a rw session `--drain` after the sweep, not before,
//! and a second sweep meanwhile does not restart the clock; a session still placed is left
//! alone; a zero drain closes at once. Unit-level: the registry and the index only, no
//! sockets. (`tests/drain.rs` runs the same against MariaDB end to end.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ocean_core::table::mysql::{Access, Credentials, Grant, MysqlDatabase, MysqlJob, MysqlTable};
use ocean_mysql_proxy::route::registry::{NewSession, Registry, SessionGuard};
use ocean_mysql_proxy::route::Index;

const DRAIN: Duration = Duration::from_secs(30);
const OLD: &str = "127.0.0.1:3306";
const NEW: &str = "127.0.0.1:3307";

fn table(primary: &str) -> MysqlTable {
    MysqlTable {
        databases: vec![MysqlDatabase {
            name: "/shop/db".into(),
            primary: primary.parse().ok(),
            replicas: vec![OLD.parse().unwrap()],
            candidates: vec![],
            ro: Some(Credentials {
                user: "ro".into(),
                password: "ro-pw".into(),
            }),
            rw: Credentials {
                user: "rw".into(),
                password: "rw-pw".into(),
            },
            schema: "shop".into(),
            pool_max: None,
            multiplex: None,
        }],
        jobs: vec![MysqlJob {
            name: "shop/web".into(),
            ips: vec!["10.0.0.5".parse().unwrap()],
            grants: vec![Grant {
                database: "/shop/db".into(),
                access: Access::Rw,
            }],
            password: None,
            require_cert_cn: None,
        }],
    }
}

fn session(registry: &Arc<Registry>, access: Access, backend: &str) -> SessionGuard {
    let backend: SocketAddr = backend.parse().unwrap();
    let peer: IpAddr = "10.0.0.5".parse().unwrap();
    registry
        .register(
            NewSession {
                job: "shop/web",
                database: "/shop/db",
                access,
                backend,
                peer,
            },
            0,
        )
        .unwrap()
}

/// Lets spawned tasks run at the current instant (the clock does not move).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_moved_primary_closes_rw_sessions_after_the_drain_not_before() {
    let registry = Arc::new(Registry::default());
    let rw = session(&registry, Access::Rw, OLD);
    // A ro session on the old primary, which stays listed as a replica: still placed.
    let ro = session(&registry, Access::Ro, OLD);
    let moved = Index::build("e2", &table(NEW));

    registry.sweep(&moved, &[], DRAIN, false);
    tokio::time::sleep(DRAIN / 3).await;
    // The next table comes with the primary still moved: the drain is not restarted.
    registry.sweep(&moved, &[], DRAIN, false);
    tokio::time::sleep(DRAIN - DRAIN / 3 - Duration::from_millis(1)).await;
    settle().await;
    assert!(
        !rw.closer.token.is_cancelled(),
        "closed before the drain ended"
    );

    tokio::time::sleep(Duration::from_millis(1)).await;
    settle().await;
    assert!(
        rw.closer.token.is_cancelled(),
        "still open when the drain ended"
    );
    assert_eq!(rw.closer.reason.get(), Some(&"database moved"));
    assert!(
        !ro.closer.token.is_cancelled(),
        "a session still placed was closed"
    );

    // Long after, still only the moved one.
    tokio::time::sleep(DRAIN * 10).await;
    assert!(!ro.closer.token.is_cancelled());
    assert_eq!(
        registry.len(),
        2,
        "closing is the connection's job; the guards remain"
    );
}

#[tokio::test(start_paused = true)]
async fn a_zero_drain_closes_at_once_and_a_closed_session_keeps_its_first_reason() {
    let registry = Arc::new(Registry::default());
    let rw = session(&registry, Access::Rw, OLD);
    rw.closer.close("client quit");
    let rw2 = session(&registry, Access::Rw, OLD);
    registry.sweep(&Index::build("e2", &table(NEW)), &[], Duration::ZERO, false);
    assert!(rw2.closer.token.is_cancelled());
    assert_eq!(rw2.closer.reason.get(), Some(&"database moved"));
    assert_eq!(rw.closer.reason.get(), Some(&"client quit"));
}
