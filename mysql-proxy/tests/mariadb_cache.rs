//! MariaDB's metadata cache (`MARIADB_CLIENT_CACHE_METADATA`) through the proxy, against
//! a real mariadbd: offered once the proxy has seen the backend offer it, negotiated on the
//! backend login of a session whose client asked for it, and then a prepared statement's
//! executes come without the column definitions its prepare gave; a client that did not
//! ask gets them every time. Alone and multiplexed. A client claiming extensions the
//! greeting did not offer gets none of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mysql_common::constants::MariadbCapabilities;
use mysql_common::packets::{AuthPlugin, HandshakeResponse};
use mysql_common::proto::MySerialize;
use ocean_core::table::mysql::{Access, MysqlTable};
use ocean_mysql_proxy::auth::client_response;
use ocean_mysql_proxy::proto::handshake::parse_greeting;
use ocean_mysql_proxy::proto::Decoder;
use ocean_mysql_proxy::upstream::BackendError;
use ocean_mysql_proxy::wire::{read_packet, write_packet};
use tokio::net::TcpStream;

const JOB: &str = "shop/cache";
const PW: &str = "cache-pw";
const CACHE: MariadbCapabilities = MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA;

/// Logs in to the proxy as the job, asking for `mariadb`.
async fn client(
    proxy: std::net::SocketAddr,
    mariadb: MariadbCapabilities,
) -> Result<TcpStream, BackendError> {
    raw_session(proxy, JOB, PW, mariadb).await
}

async fn packet(s: &mut TcpStream) -> Vec<u8> {
    read_packet(s, Decoder::new(1 << 20))
        .await
        .unwrap()
        .payload
        .to_vec()
}

fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xfe) && p.len() < 9
}

/// COM_STMT_PREPARE of `sql`: the statement id (its definitions read).
async fn prepare(s: &mut TcpStream, sql: &str) -> u32 {
    let mut p = vec![0x16];
    p.extend_from_slice(sql.as_bytes());
    write_packet(s, 0, &p).await.unwrap();
    let ok = packet(s).await;
    assert_eq!(
        ok[0],
        0x00,
        "prepare refused: {}",
        String::from_utf8_lossy(&ok)
    );
    let id = u32::from_le_bytes(ok[1..5].try_into().unwrap());
    let columns = u16::from_le_bytes([ok[5], ok[6]]);
    let params = u16::from_le_bytes([ok[7], ok[8]]);
    for n in [params, columns] {
        if n > 0 {
            assert_eq!(until_eof(s).await.len(), usize::from(n));
        }
    }
    id
}

/// COM_STMT_EXECUTE of statement `id` with one INT parameter: the column count packet's
/// payload, how many column definitions came, and the rows' last column as text.
async fn execute(s: &mut TcpStream, id: u32, param: i32) -> (Vec<u8>, usize, Vec<String>) {
    let mut p = vec![0x17];
    p.extend_from_slice(&id.to_le_bytes());
    p.push(0); // no cursor
    p.extend_from_slice(&1u32.to_le_bytes()); // iterations
    p.push(0); // NULL bitmap of one parameter
    p.push(1); // types follow
    p.extend_from_slice(&[0x03, 0x00]); // MYSQL_TYPE_LONG, signed
    p.extend_from_slice(&param.to_le_bytes());
    write_packet(s, 0, &p).await.unwrap();
    let count = packet(s).await;
    assert_ne!(
        count[0],
        0xff,
        "execute refused: {}",
        String::from_utf8_lossy(&count)
    );
    let defs = until_eof(s).await.len();
    // Binary rows of one VARCHAR: 0x00, a one-byte NULL bitmap, a length-prefixed string
    // (short here).
    let rows = until_eof(s)
        .await
        .iter()
        .map(|p| String::from_utf8_lossy(&p[3..3 + usize::from(p[2])]).into_owned())
        .collect();
    (count, defs, rows)
}

/// The packets up to the next EOF (not included).
async fn until_eof(s: &mut TcpStream) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    loop {
        let p = packet(s).await;
        if is_eof(&p) {
            return packets;
        }
        packets.push(p);
    }
}

/// mariadbd and the proxy in front of it, the job granted; multiplexed on at most two
/// backend connections if asked. Keep the handles for as long as the proxy is used.
async fn setup(
    multiplex: bool,
) -> (
    ocean_tests::servers::MariaDb,
    tempfile::TempDir,
    ocean_mysql_proxy::Running,
    tokio_util::sync::CancellationToken,
) {
    let (db, dir, table_file) = prepared_backend().await;
    let mut database = database(db.addr(), vec![]);
    if multiplex {
        database.pool_max = Some(2);
        database.multiplex = Some(true);
    }
    let table = MysqlTable {
        databases: vec![database],
        jobs: vec![job(JOB, &["192.0.2.77"], Access::Rw, Some(PW))],
    };
    write_table(&table_file, &table);
    let (proxy, cancel) = start_proxy(config(table_file)).await;
    (db, dir, proxy, cancel)
}

async fn check(multiplex: bool) {
    let (_db, _dir, proxy, _cancel) = setup(multiplex).await;

    // Before any backend login the proxy does not know what the server offers: a client
    // asking for the cache is not offered it (the login here refuses a greeting without).
    match client(proxy.addr, CACHE).await {
        Err(BackendError::Mariadb { server, .. }) => assert!(server.is_empty()),
        other => panic!(
            "the cache was offered before any backend login: {:?}",
            other.err()
        ),
    }
    // A plain session's backend login shows the server (MariaDB 10.6+) offers it.
    let mut plain = client(proxy.addr, MariadbCapabilities::empty())
        .await
        .unwrap();
    let mut cached = client(proxy.addr, CACHE).await.unwrap();
    if multiplex {
        // Three sessions take turns on at most two backend connections: each gives its
        // connection back after a text result set with the cache's flag in its count
        // (the exchange tracker follows it), or the third would wait for --pool-wait.
        let mut more = [
            client(proxy.addr, CACHE).await.unwrap(),
            client(proxy.addr, CACHE).await.unwrap(),
        ];
        for _ in 0..2 {
            select_7(&mut cached, true).await;
            for s in &mut more {
                select_7(s, true).await;
            }
        }
    }

    let sql = "SELECT name FROM shop.items WHERE id = ?";
    let id = prepare(&mut cached, sql).await;
    // The client has the definitions from the prepare: the server leaves them out, the
    // count saying so ("0: no metadata follows").
    for (param, name) in [(1, "apple"), (2, "pear"), (1, "apple")] {
        let (count, defs, rows) = execute(&mut cached, id, param).await;
        assert_eq!((count, defs, rows), (vec![1, 0], 0, vec![name.to_string()]));
    }

    // Without the capability every execute carries them, in the classic format.
    let id = prepare(&mut plain, sql).await;
    for (param, name) in [(1, "apple"), (2, "pear")] {
        let (count, defs, rows) = execute(&mut plain, id, param).await;
        assert_eq!((count, defs, rows), (vec![1], 1, vec![name.to_string()]));
    }

    // Both sessions are still in step: a plain query after the executes.
    select_7(&mut cached, true).await;
    select_7(&mut plain, false).await;
}

/// `SELECT 7` (a text result set; with the cache its count says "metadata follows").
async fn select_7(s: &mut TcpStream, cache: bool) {
    write_packet(s, 0, b"\x03SELECT 7").await.unwrap();
    let count = packet(s).await;
    let expected: &[u8] = if cache { &[1, 1] } else { &[1] };
    assert_eq!(count, expected);
    packet(s).await; // its definition
    assert!(is_eof(&packet(s).await));
    assert_eq!(packet(s).await, b"\x017");
    assert!(is_eof(&packet(s).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_prepared_statement_skips_its_metadata_through_the_proxy() {
    check(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multiplexed_session_keeps_the_cache_on_its_pinned_connection() {
    check(true).await;
}

/// Logs in to the proxy as the job with a handshake response of its own that claims the
/// MariaDB extensions `claimed`, whatever the greeting offered (asserted: nothing).
async fn claiming_client(proxy: std::net::SocketAddr, claimed: MariadbCapabilities) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let greeting = read_packet(&mut s, Decoder::new(1 << 20)).await.unwrap();
    let hs = parse_greeting(&greeting.payload).unwrap();
    assert!(
        hs.mariadb_ext_capabilities().is_empty(),
        "nothing was offered"
    );
    let plugin = hs.auth_plugin_name_ref().unwrap().to_vec();
    let data = client_response(&plugin, &hs.nonce(), PW).unwrap();
    let response = HandshakeResponse::new(
        Some(data),
        (8, 0, 0),
        Some(JOB.as_bytes()),
        Some(&b"shop"[..]),
        Some(AuthPlugin::from_bytes(&plugin)),
        lean_client(MariadbCapabilities::empty()).capabilities,
        None,
        16 << 20,
    )
    .with_mariadb_ext_capabilities(claimed);
    let mut payload = Vec::new();
    response.serialize(&mut payload);
    write_packet(&mut s, greeting.last_seq.wrapping_add(1), &payload)
        .await
        .unwrap();
    let ok = packet(&mut s).await;
    assert_eq!(
        ok[0],
        0x00,
        "login refused: {}",
        String::from_utf8_lossy(&ok)
    );
    s
}

/// A client that claims every MariaDB extension although the greeting offered none (the
/// proxy has not seen its backend yet) gets none of them: its backend login asks for
/// nothing, and each execute carries its column definitions in the classic format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_claimed_without_an_offer_are_not_passed_on() {
    let (_db, _dir, proxy, _cancel) = setup(false).await;
    let mut s = claiming_client(proxy.addr, MariadbCapabilities::all()).await;
    let id = prepare(&mut s, "SELECT name FROM shop.items WHERE id = ?").await;
    for (param, name) in [(1, "apple"), (2, "pear")] {
        let (count, defs, rows) = execute(&mut s, id, param).await;
        assert_eq!((count, defs, rows), (vec![1], 1, vec![name.to_string()]));
    }
    select_7(&mut s, false).await;
}
