//! The command/response exchange of a relayed session, followed from the bytes each side
//! sends, to tell when the session is **at rest**: no command waiting for (the rest of) its
//! response and no transaction open. A drain (SIGTERM) closes a session only at rest, so
//! no client loses a reply or sees a transaction cut in the middle.
//!
//! Only packet headers and the first bytes of each server packet are looked at; payloads
//! pass through untouched. The response shapes followed (MySQL client/server protocol):
//! - OK / ERR: one packet; an OK (or EOF) carries the status flags
//!   `SERVER_STATUS_IN_TRANS` and `SERVER_MORE_RESULTS_EXISTS`.
//! - A result set (COM_QUERY, COM_STMT_EXECUTE): a column count, that many column
//!   definitions, an EOF unless `CLIENT_DEPRECATE_EOF`, rows, and a terminator (EOF, or an
//!   OK with an 0xFE header) or an ERR. `MORE_RESULTS` in the terminator: another follows.
//!   With MariaDB's `MARIADB_CLIENT_CACHE_METADATA` the count is followed by one byte,
//!   0 when the definitions are left out (the client has them from an earlier execute).
//! - COM_STMT_PREPARE: its OK, then the parameter and column definitions (each block
//!   followed by an EOF unless `CLIENT_DEPRECATE_EOF`).
//! - COM_FIELD_LIST / COM_STMT_FETCH: packets up to an EOF or ERR. COM_STATISTICS: one.
//! - COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA: no response.
//! - LOCAL INFILE (0xFB): the client sends the file, the server ends with OK or ERR.
//!
//! Anything else (replication, an unknown command) is never at rest: the drain then ends
//! with `--drain-timeout`, which is always safe.

use crate::proto::frame::{HEADER_LEN, MAX_PAYLOAD};

use crate::proto::command::{
    COM_DEBUG, COM_FIELD_LIST, COM_INIT_DB, COM_PING, COM_PROCESS_KILL, COM_QUERY, COM_QUIT,
    COM_REFRESH, COM_RESET_CONNECTION, COM_SET_OPTION, COM_STATISTICS, COM_STMT_CLOSE,
    COM_STMT_EXECUTE, COM_STMT_FETCH, COM_STMT_PREPARE, COM_STMT_RESET, COM_STMT_SEND_LONG_DATA,
};

const STATUS_IN_TRANS: u16 = 0x0001;
const STATUS_MORE_RESULTS: u16 = 0x0008;

/// Bytes kept of the start of each server packet: enough for an OK's status flags
/// (header byte, two length-encoded integers of up to 9 bytes, two status bytes).
const HEAD_KEEP: usize = 24;

/// What the session waits for from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Nothing: the last command has its whole response.
    Nothing,
    /// The first packet of a response that may be OK, ERR, LOCAL INFILE or a result set.
    QueryResponse,
    /// One packet (OK, ERR, EOF or a string), whatever it is.
    OnePacket,
    /// `left` more packets of column definitions (and the EOF after them, unless
    /// `CLIENT_DEPRECATE_EOF`), then rows up to a terminator.
    Columns { left: u64 },
    /// Rows up to a terminator (EOF / 0xFE OK) or an ERR.
    Rows,
    /// COM_STMT_PREPARE's first packet: its OK or an ERR.
    PrepareOk,
    /// `left` more packets of a prepared statement's parameter and column definitions
    /// (each block ended by an EOF unless `CLIENT_DEPRECATE_EOF`).
    PrepareDefs { left: u64 },
    /// Packets up to an EOF or ERR (COM_FIELD_LIST, COM_STMT_FETCH).
    UntilEof,
    /// A response the tracker cannot follow: never at rest again.
    Lost,
}

/// Walks packet headers across reads, without allocating.
#[derive(Debug, Default)]
struct Framer {
    /// Header bytes of the next packet seen so far.
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// Payload bytes of the current packet still to come.
    left: usize,
    /// The current packet's payload length and sequence id.
    len: usize,
    seq: u8,
    /// The current packet's first payload bytes.
    head: [u8; HEAD_KEEP],
    head_len: usize,
    /// The current packet continues a 16 MB one.
    continuing: bool,
    /// A header has been read and the packet's payload is not complete.
    in_packet: bool,
}

/// A complete packet as the framer saw it.
#[derive(Debug)]
struct Seen<'a> {
    /// Its first payload bytes (up to [`HEAD_KEEP`]).
    head: &'a [u8],
    len: usize,
    seq: u8,
    /// It continues a 16 MB packet (its head is not a packet start).
    continuation: bool,
}

impl Framer {
    fn at_boundary(&self) -> bool {
        !self.in_packet && self.header_len == 0
    }

    /// Feeds bytes; calls `on` for each packet completed.
    fn feed(&mut self, mut bytes: &[u8], mut on: impl FnMut(Seen<'_>)) {
        while !bytes.is_empty() {
            if !self.in_packet {
                let take = (HEADER_LEN - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&bytes[..take]);
                self.header_len += take;
                bytes = &bytes[take..];
                if self.header_len < HEADER_LEN {
                    return;
                }
                let h = self.header;
                self.len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
                self.seq = h[3];
                self.header_len = 0;
                self.left = self.len;
                self.head_len = 0;
                self.in_packet = true;
            }
            let take = self.left.min(bytes.len());
            let keep = (HEAD_KEEP - self.head_len).min(take);
            self.head[self.head_len..self.head_len + keep].copy_from_slice(&bytes[..keep]);
            self.head_len += keep;
            self.left -= take;
            bytes = &bytes[take..];
            if self.left == 0 {
                self.in_packet = false;
                let continuation = self.continuing;
                self.continuing = self.len == MAX_PAYLOAD;
                on(Seen {
                    head: &self.head[..self.head_len],
                    len: self.len,
                    seq: self.seq,
                    continuation,
                });
            }
        }
    }
}

/// One session's exchange; see the module doc.
#[derive(Debug)]
pub struct Exchange {
    deprecate_eof: bool,
    expect: Expect,
    /// The command byte of the last command that expects a response.
    command: u8,
    in_trans: bool,
    /// The command being answered, or answered last, got an ERR packet.
    failed: bool,
    client: Framer,
    server: Framer,
}

impl Exchange {
    /// `deprecate_eof`: `CLIENT_DEPRECATE_EOF` was negotiated with the backend.
    pub fn new(deprecate_eof: bool) -> Exchange {
        Exchange {
            deprecate_eof,
            expect: Expect::Nothing,
            command: 0,
            in_trans: false,
            failed: false,
            client: Framer::default(),
            server: Framer::default(),
        }
    }

    /// No command waits for its response, no transaction is open, and neither stream is
    /// inside a packet.
    pub fn at_rest(&self) -> bool {
        self.expect == Expect::Nothing
            && !self.in_trans
            && self.client.at_boundary()
            && self.server.at_boundary()
    }

    /// The command (its first payload byte, e.g. `0x03` COM_QUERY) whose response is still
    /// owed; `None` when nothing is owed, or the response's shape is not followed (lost).
    pub fn awaiting(&self) -> Option<u8> {
        match self.expect {
            Expect::Nothing | Expect::Lost => None,
            _ => Some(self.command),
        }
    }

    /// The exchange could not be followed (an unknown command or response shape).
    pub fn lost(&self) -> bool {
        self.expect == Expect::Lost
    }

    /// Whether the command being answered, or answered last, got an ERR packet (for
    /// `ocean_mysql_query_errors_total`).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Whether the server said a transaction is open (its last status flags).
    pub fn in_transaction(&self) -> bool {
        self.in_trans
    }

    /// Bytes the client sent that were forwarded to the server.
    pub fn client_sent(&mut self, bytes: &[u8]) {
        let mut framer = std::mem::take(&mut self.client);
        framer.feed(bytes, |p| {
            // A command starts a new sequence; LOCAL INFILE data and 16 MB continuations
            // do not.
            if p.seq == 0 && !p.continuation {
                self.on_command(p.head.first().copied());
            }
        });
        self.client = framer;
    }

    fn on_command(&mut self, cmd: Option<u8>) {
        if !matches!(
            cmd,
            Some(COM_QUIT | COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA)
        ) {
            self.command = cmd.unwrap_or(0);
            self.failed = false;
        }
        self.expect = match cmd {
            // No response; keep what an earlier command still waits for.
            Some(COM_QUIT | COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA) => self.expect,
            Some(COM_QUERY | COM_STMT_EXECUTE) => Expect::QueryResponse,
            Some(COM_STMT_PREPARE) => Expect::PrepareOk,
            Some(COM_FIELD_LIST | COM_STMT_FETCH) => Expect::UntilEof,
            Some(
                COM_INIT_DB | COM_REFRESH | COM_STATISTICS | COM_PROCESS_KILL | COM_DEBUG
                | COM_PING | COM_STMT_RESET | COM_SET_OPTION | COM_RESET_CONNECTION,
            ) => Expect::OnePacket,
            _ => Expect::Lost,
        };
        if cmd == Some(COM_RESET_CONNECTION) {
            self.in_trans = false;
        }
    }

    /// Bytes the server sent that were relayed to the client.
    pub fn server_sent(&mut self, bytes: &[u8]) {
        let mut framer = std::mem::take(&mut self.server);
        framer.feed(bytes, |p| {
            if !p.continuation {
                self.on_server_packet(p.head, p.len);
            }
        });
        self.server = framer;
    }

    fn on_server_packet(&mut self, head: &[u8], len: usize) {
        let first = head.first().copied();
        let eof = self.eof_after_defs();
        // No definition or row starts with 0xFF, so where a response may end, it is ERR.
        if first == Some(0xFF)
            && matches!(
                self.expect,
                Expect::QueryResponse
                    | Expect::Columns { .. }
                    | Expect::Rows
                    | Expect::PrepareOk
                    | Expect::UntilEof
                    | Expect::OnePacket
            )
        {
            self.failed = true;
        }
        self.expect = match self.expect {
            Expect::Nothing => Expect::Nothing,
            Expect::Lost => Expect::Lost,
            Expect::OnePacket => {
                if first == Some(0x00) {
                    self.ok_status(head);
                }
                Expect::Nothing
            }
            Expect::QueryResponse => match first {
                Some(0x00) => end_of_result(self.ok_status(head)),
                Some(0xFF) => Expect::Nothing,
                // LOCAL INFILE: the client sends the file, the server answers OK or ERR.
                Some(0xFB) => Expect::QueryResponse,
                _ => match lenenc(head) {
                    Some((0, _)) | None => Expect::Lost,
                    Some((n, used)) => {
                        // MariaDB's metadata cache (MARIADB_CLIENT_CACHE_METADATA): one
                        // byte after the count says whether the definitions follow.
                        let defs = if len == used + 1 && head.get(used) == Some(&0) {
                            0
                        } else {
                            n
                        };
                        match defs.saturating_add(u64::from(eof)) {
                            0 => Expect::Rows,
                            left => Expect::Columns { left },
                        }
                    }
                },
            },
            Expect::Columns { left } => match (first, left) {
                (Some(0xFF), _) => Expect::Nothing,
                (_, 0 | 1) => Expect::Rows,
                (_, n) => Expect::Columns { left: n - 1 },
            },
            Expect::Rows => match first {
                Some(0xFF) => Expect::Nothing,
                Some(0xFE) if len < MAX_PAYLOAD => {
                    let status = if self.deprecate_eof {
                        self.ok_status(head)
                    } else {
                        self.eof_status(head)
                    };
                    end_of_result(status)
                }
                _ => Expect::Rows,
            },
            Expect::PrepareOk => match (first, head.get(5..9)) {
                (Some(0x00), Some(&[c0, c1, p0, p1])) => {
                    let block = |n: u16| {
                        if n == 0 {
                            0
                        } else {
                            u64::from(n) + u64::from(eof)
                        }
                    };
                    match block(u16::from_le_bytes([c0, c1])) + block(u16::from_le_bytes([p0, p1]))
                    {
                        0 => Expect::Nothing,
                        left => Expect::PrepareDefs { left },
                    }
                }
                (Some(0xFF), _) => Expect::Nothing,
                _ => Expect::Lost,
            },
            Expect::PrepareDefs { left } => match left {
                0 | 1 => Expect::Nothing,
                n => Expect::PrepareDefs { left: n - 1 },
            },
            Expect::UntilEof => match first {
                Some(0xFF) => Expect::Nothing,
                Some(0xFE) if len < 9 => {
                    let status = self.eof_status(head);
                    end_of_result(status)
                }
                _ => Expect::UntilEof,
            },
        };
    }

    /// Whether result-set column definitions are followed by an EOF packet.
    fn eof_after_defs(&self) -> bool {
        !self.deprecate_eof
    }

    /// An OK packet's (0x00 or 0xFE header) status flags; records IN_TRANS.
    fn ok_status(&mut self, head: &[u8]) -> Option<u16> {
        let rest = head.get(1..)?;
        let (_, a) = lenenc(rest)?;
        let (_, b) = lenenc(rest.get(a..)?)?;
        let s = rest.get(a + b..a + b + 2)?;
        let status = u16::from_le_bytes([s[0], s[1]]);
        self.in_trans = status & STATUS_IN_TRANS != 0;
        Some(status)
    }

    /// An EOF packet's status flags (0xFE, warnings, status); records IN_TRANS.
    fn eof_status(&mut self, head: &[u8]) -> Option<u16> {
        let s = head.get(3..5)?;
        let status = u16::from_le_bytes([s[0], s[1]]);
        self.in_trans = status & STATUS_IN_TRANS != 0;
        Some(status)
    }
}

/// After a result's last packet: another result follows when the server says so.
fn end_of_result(status: Option<u16>) -> Expect {
    match status {
        Some(s) if s & STATUS_MORE_RESULTS != 0 => Expect::QueryResponse,
        Some(_) => Expect::Nothing,
        None => Expect::Lost,
    }
}

/// A length-encoded integer at the start of `b`: its value and size in bytes.
fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    match *b.first()? {
        n @ 0..=0xFA => Some((u64::from(n), 1)),
        0xFC => Some((u64::from(u16::from_le_bytes([*b.get(1)?, *b.get(2)?])), 3)),
        0xFD => Some((
            u64::from(u32::from_le_bytes([*b.get(1)?, *b.get(2)?, *b.get(3)?, 0])),
            4,
        )),
        0xFE => {
            let v = b.get(1..9)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(v);
            Some((u64::from_le_bytes(a), 9))
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::frame::encode;

    fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode(seq, payload, &mut v);
        v
    }

    fn ok(status: u16) -> Vec<u8> {
        let s = status.to_le_bytes();
        vec![0x00, 0x00, 0x00, s[0], s[1], 0x00, 0x00]
    }

    fn eof(status: u16) -> Vec<u8> {
        let s = status.to_le_bytes();
        vec![0xFE, 0x00, 0x00, s[0], s[1]]
    }

    fn ok_fe(status: u16) -> Vec<u8> {
        let mut v = ok(status);
        v[0] = 0xFE;
        v
    }

    /// A text result set's head: the column count, `names` as definitions and, without
    /// `CLIENT_DEPRECATE_EOF`, the EOF after them. Returns it and the next sequence id.
    fn result_head(deprecate: bool, names: &[&[u8]]) -> (Vec<u8>, u8) {
        let mut s = pkt(1, &[names.len() as u8]);
        let mut seq = 2;
        for name in names {
            s.extend(pkt(seq, &[b"\x03def", *name].concat()));
            seq += 1;
        }
        if !deprecate {
            s.extend(pkt(seq, &eof(0x0002)));
            seq += 1;
        }
        (s, seq)
    }

    /// Feeds the server bytes one at a time: boundaries anywhere must not matter.
    fn server_bytewise(x: &mut Exchange, bytes: &[u8]) {
        for b in bytes {
            x.server_sent(std::slice::from_ref(b));
        }
    }

    #[test]
    fn a_query_answered_by_ok_or_err_comes_to_rest() {
        let mut x = Exchange::new(true);
        assert!(x.at_rest());
        x.client_sent(&pkt(0, b"\x03UPDATE t SET a=1"));
        assert!(!x.at_rest());
        let reply = pkt(1, &ok(0x0002));
        x.server_sent(&reply[..5]);
        assert!(!x.at_rest(), "half an OK");
        x.server_sent(&reply[5..]);
        assert!(x.at_rest());

        x.client_sent(&pkt(0, b"\x03SELEC"));
        x.server_sent(&pkt(1, b"\xff\x28\x04#42000syntax"));
        assert!(x.at_rest());
    }

    #[test]
    fn an_err_answer_marks_the_command_failed_until_the_next_one() {
        let err = pkt(1, b"\xff\x7a\x04#42S02no such table");
        // A query refused at once, then one that succeeds.
        let mut x = Exchange::new(true);
        x.client_sent(&pkt(0, b"\x03SELECT * FROM nope"));
        assert!(!x.failed());
        server_bytewise(&mut x, &err);
        assert!(x.failed() && x.at_rest());
        x.client_sent(&pkt(0, b"\x03SELECT 1"));
        assert!(!x.failed(), "a new command starts clean");
        x.server_sent(&pkt(1, &ok(0x0002)));
        assert!(!x.failed());
        // COM_STMT_CLOSE has no answer: it does not clear the last one's.
        x.client_sent(&pkt(0, b"\x03SELECT * FROM nope"));
        x.server_sent(&err);
        x.client_sent(&pkt(0, b"\x19\x01\x00\x00\x00"));
        assert!(x.failed());
        // An error in the middle of the rows (a query killed while it sends).
        for deprecate in [false, true] {
            let mut x = Exchange::new(deprecate);
            x.client_sent(&pkt(0, b"\x03SELECT a FROM t"));
            let (mut s, seq) = result_head(deprecate, &[b"column-a"]);
            s.extend(pkt(seq, b"\x01x"));
            server_bytewise(&mut x, &s);
            assert!(!x.failed(), "deprecate_eof={deprecate}: rows so far");
            server_bytewise(&mut x, &pkt(seq + 1, b"\xff\x35\x07#70100interrupted"));
            assert!(x.failed() && x.at_rest(), "deprecate_eof={deprecate}");
        }
        // A prepare refused, and a ping answered.
        let mut x = Exchange::new(true);
        x.client_sent(&pkt(0, b"\x16SELEC ?"));
        x.server_sent(&pkt(1, b"\xff\x28\x04#42000syntax"));
        assert!(x.failed() && x.at_rest());
        x.client_sent(&pkt(0, b"\x0e"));
        x.server_sent(&pkt(1, &ok(0x0002)));
        assert!(!x.failed());
    }

    #[test]
    fn the_command_owed_a_response_is_known_until_it_is_answered() {
        let mut x = Exchange::new(false);
        assert_eq!(x.awaiting(), None);
        x.client_sent(&pkt(0, b"\x17\x01\x00\x00\x00"));
        assert_eq!(x.awaiting(), Some(COM_STMT_EXECUTE));
        // COM_STMT_CLOSE has no response and does not replace what is owed.
        x.client_sent(&pkt(0, b"\x19\x01\x00\x00\x00"));
        assert_eq!(x.awaiting(), Some(COM_STMT_EXECUTE));
        x.server_sent(&pkt(1, &ok(0x0002)));
        assert_eq!(x.awaiting(), None);
        x.client_sent(&pkt(0, b"\x99"));
        assert!(x.lost());
        assert_eq!(x.awaiting(), None, "an unknown command is never timed");
    }

    #[test]
    fn a_transaction_holds_the_session_until_commit() {
        let mut x = Exchange::new(true);
        x.client_sent(&pkt(0, b"\x03BEGIN"));
        x.server_sent(&pkt(1, &ok(STATUS_IN_TRANS | 0x0002)));
        assert!(x.in_transaction());
        assert!(!x.at_rest());
        x.client_sent(&pkt(0, b"\x03COMMIT"));
        x.server_sent(&pkt(1, &ok(0x0002)));
        assert!(x.at_rest());
    }

    #[test]
    fn a_result_set_ends_at_its_terminator_in_both_eof_modes() {
        for deprecate in [false, true] {
            let mut x = Exchange::new(deprecate);
            x.client_sent(&pkt(0, b"\x03SELECT a, b FROM t"));
            let (mut s, seq) = result_head(deprecate, &[b"column-a", b"column-b"]);
            // Rows that look like OK and EOF headers must not end it: a row whose first
            // column is empty starts with 0x00; a long 0xFE row is >= 16 MB (not here).
            s.extend(pkt(seq, b"\x00\x01x"));
            s.extend(pkt(seq + 1, b"\x01y\x01z"));
            let before_end = s.len();
            let term = if deprecate {
                ok_fe(0x0002)
            } else {
                eof(0x0002)
            };
            s.extend(pkt(seq + 2, &term));
            server_bytewise(&mut x, &s[..before_end]);
            assert!(!x.at_rest(), "deprecate_eof={deprecate}: rows still coming");
            server_bytewise(&mut x, &s[before_end..]);
            assert!(x.at_rest(), "deprecate_eof={deprecate}");
        }
    }

    /// MariaDB's metadata cache: a count followed by 0 has no column definitions (only
    /// the EOF after them, unless `CLIENT_DEPRECATE_EOF`), one followed by 1 has them.
    #[test]
    fn a_result_set_without_its_cached_metadata_ends_at_its_terminator() {
        for (deprecate, follows) in [(false, 0u8), (true, 0), (false, 1), (true, 1)] {
            let mut x = Exchange::new(deprecate);
            x.client_sent(&pkt(0, b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00"));
            let mut s = pkt(1, &[0x02, follows]);
            let mut seq = 2;
            if follows == 1 {
                s.extend(pkt(seq, b"\x03defcolumn-a"));
                s.extend(pkt(seq + 1, b"\x03defcolumn-b"));
                seq += 2;
            }
            if !deprecate {
                s.extend(pkt(seq, &eof(0x0002)));
                seq += 1;
            }
            // A binary row (0x00 header, then the NULL bitmap and values).
            s.extend(pkt(seq, b"\x00\x00\x01\x02\x03\x04"));
            let before_end = s.len();
            let term = if deprecate {
                ok_fe(0x0002)
            } else {
                eof(0x0002)
            };
            s.extend(pkt(seq + 1, &term));
            let case = format!("deprecate_eof={deprecate} metadata follows={follows}");
            server_bytewise(&mut x, &s[..before_end]);
            assert!(!x.at_rest(), "{case}: the terminator is still to come");
            server_bytewise(&mut x, &s[before_end..]);
            assert!(x.at_rest(), "{case}");
            assert!(!x.lost(), "{case}");
        }
    }

    #[test]
    fn more_results_keep_the_exchange_open() {
        let mut x = Exchange::new(true);
        x.client_sent(&pkt(0, b"\x03CALL p()"));
        x.server_sent(&pkt(1, &ok(STATUS_MORE_RESULTS | 0x0002)));
        assert!(!x.at_rest());
        x.server_sent(&pkt(2, &ok(0x0002)));
        assert!(x.at_rest());
    }

    #[test]
    fn a_prepare_waits_for_every_definition() {
        for deprecate in [false, true] {
            let mut x = Exchange::new(deprecate);
            x.client_sent(&pkt(0, b"\x16SELECT ? FROM t WHERE a=?"));
            // OK: stmt id 1, 1 column, 2 params.
            x.server_sent(&pkt(1, &[0x00, 1, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0]));
            let mut defs = vec![pkt(2, b"\x03defp1"), pkt(3, b"\x03defp2")];
            if !deprecate {
                defs.push(pkt(4, &eof(0x0002)));
            }
            defs.push(pkt(5, b"\x03defc1"));
            if !deprecate {
                defs.push(pkt(6, &eof(0x0002)));
            }
            let last = defs.pop().unwrap();
            for d in defs {
                x.server_sent(&d);
                assert!(!x.at_rest(), "deprecate_eof={deprecate}");
            }
            x.server_sent(&last);
            assert!(x.at_rest(), "deprecate_eof={deprecate}");
        }
    }

    #[test]
    fn commands_without_a_response_and_unknown_ones() {
        let mut x = Exchange::new(true);
        x.client_sent(&pkt(0, &[COM_STMT_CLOSE, 1, 0, 0, 0]));
        assert!(x.at_rest());
        x.client_sent(&pkt(0, &[COM_PING]));
        assert!(!x.at_rest());
        x.server_sent(&pkt(1, &ok(0x0002)));
        assert!(x.at_rest());
        // Replication: the tracker cannot follow it, so never at rest.
        x.client_sent(&pkt(0, &[0x12, 0, 0, 0, 0]));
        x.server_sent(&pkt(1, &ok(0x0002)));
        assert!(!x.at_rest());
    }

    #[test]
    fn half_a_command_is_not_at_rest() {
        let mut x = Exchange::new(true);
        let q = pkt(0, b"\x03SELECT 1");
        x.client_sent(&q[..6]);
        assert!(!x.at_rest());
    }

    #[test]
    fn local_infile_waits_for_the_final_ok() {
        let mut x = Exchange::new(true);
        x.client_sent(&pkt(0, b"\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t"));
        x.server_sent(&pkt(1, b"\xfbf"));
        assert!(!x.at_rest());
        x.client_sent(&pkt(2, b"1,2\n"));
        x.client_sent(&pkt(3, b""));
        assert!(!x.at_rest());
        x.server_sent(&pkt(4, &ok(0x0002)));
        assert!(x.at_rest());
    }
}
