//! What a multiplexed session's command does to its state on the server: whether it may
//! run on a shared connection ([`plain_read`]), and if not, why the session keeps its
//! connection from then on ([`PinReason`], the `reason` of `ocean_mysql_pinned_total`).
//!
//! Both read the SQL text without parsing it (no string literals, no stored function
//! bodies), so they err on the side of pinning: what is not known to be harmless pins.

use crate::proto::command::{
    COM_INIT_DB, COM_QUERY, COM_SET_OPTION, COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_FETCH,
    COM_STMT_PREPARE, COM_STMT_RESET, COM_STMT_SEND_LONG_DATA,
};

/// Why a multiplexed session keeps its backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinReason {
    /// `BEGIN`, `START TRANSACTION`, `XA`, `SET autocommit`, `SET TRANSACTION`, or a
    /// statement after which the server reported a transaction open.
    Transaction,
    /// `CREATE TEMPORARY TABLE` (or `DROP TEMPORARY TABLE`).
    TempTable,
    /// A user variable set or read (`@x`; `@@system` reads do not count).
    UserVar,
    /// `SET` of a session variable (`SET NAMES`, `SET sql_mode`, ...), or COM_SET_OPTION.
    SessionVar,
    /// `GET_LOCK`/`RELEASE_*`, `LOCK TABLES`, `FOR UPDATE`, `LOCK IN SHARE MODE`.
    Lock,
    /// A prepared statement: the binary protocol's commands, or SQL `PREPARE`/`EXECUTE`.
    PreparedStatement,
    /// `USE` or COM_INIT_DB.
    Schema,
    /// A function that reads the connection's own history: `LAST_INSERT_ID`,
    /// `FOUND_ROWS`/`SQL_CALC_FOUND_ROWS`, `ROW_COUNT`, a sequence, `CONNECTION_ID`.
    SessionFunction,
    /// More than one statement in a query (`;`).
    MultiStatement,
    /// `INSERT`, `UPDATE`, `DELETE`, `REPLACE`, `LOAD`.
    Write,
    /// Any other statement (DDL, `CALL`, `SHOW`, an executable comment, text that is not
    /// UTF-8 ...).
    Statement,
    /// Any other command (COM_FIELD_LIST, COM_STATISTICS, ...).
    Command,
    /// A command over the 64 KiB the multiplexer reads whole.
    LargePacket,
    /// A response the proxy could not follow.
    Lost,
}

impl PinReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PinReason::Transaction => "transaction",
            PinReason::TempTable => "temp_table",
            PinReason::UserVar => "user_var",
            PinReason::SessionVar => "session_var",
            PinReason::Lock => "lock",
            PinReason::PreparedStatement => "prepared_statement",
            PinReason::Schema => "schema",
            PinReason::SessionFunction => "session_function",
            PinReason::MultiStatement => "multi_statement",
            PinReason::Write => "write",
            PinReason::Statement => "statement",
            PinReason::Command => "command",
            PinReason::LargePacket => "large_packet",
            PinReason::Lost => "lost",
        }
    }

    /// Why a whole command that is not a shared plain read pins: `command` is its first
    /// byte, `body` the rest (a query's text).
    pub fn of_command(command: u8, body: &[u8]) -> PinReason {
        match command {
            COM_QUERY => PinReason::of_query(body),
            COM_INIT_DB => PinReason::Schema,
            COM_SET_OPTION => PinReason::SessionVar,
            COM_STMT_PREPARE
            | COM_STMT_EXECUTE
            | COM_STMT_SEND_LONG_DATA
            | COM_STMT_CLOSE
            | COM_STMT_RESET
            | COM_STMT_FETCH => PinReason::PreparedStatement,
            _ => PinReason::Command,
        }
    }

    /// Why a query pins: the first of these that applies, in this order: what its first
    /// words say (transaction, `SET`, temporary table, lock, prepare, `USE`), a second
    /// statement, a user variable, a lock function or clause, a session function, a
    /// write; else `statement`.
    pub fn of_query(sql: &[u8]) -> PinReason {
        let Ok(text) = std::str::from_utf8(sql) else {
            return PinReason::Statement;
        };
        let upper = text.to_ascii_uppercase();
        let body = skip_space_and_comments(&upper);
        let words: Vec<&str> = body
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .take(4)
            .collect();
        let first = words.first().copied().unwrap_or("");
        let second = words.get(1).copied().unwrap_or("");
        let leading = match first {
            "BEGIN" | "XA" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" => {
                Some(PinReason::Transaction)
            }
            "START" if second == "TRANSACTION" => Some(PinReason::Transaction),
            "SET" => Some(set_reason(body.strip_prefix("SET").unwrap_or(""))),
            // CREATE [OR REPLACE] TEMPORARY TABLE, DROP TEMPORARY TABLE.
            "CREATE" | "DROP" if words[1..].contains(&"TEMPORARY") => Some(PinReason::TempTable),
            "LOCK" | "UNLOCK" => Some(PinReason::Lock),
            "PREPARE" | "EXECUTE" | "DEALLOCATE" => Some(PinReason::PreparedStatement),
            "USE" => Some(PinReason::Schema),
            _ => None,
        };
        if let Some(reason) = leading {
            return reason;
        }
        if upper.contains(';') {
            return PinReason::MultiStatement;
        }
        if has_user_variable(&upper) {
            return PinReason::UserVar;
        }
        if LOCKS.iter().any(|w| upper.contains(w)) {
            return PinReason::Lock;
        }
        if SESSION_FUNCTIONS.iter().any(|w| upper.contains(w)) {
            return PinReason::SessionFunction;
        }
        match first {
            "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD" => PinReason::Write,
            _ => PinReason::Statement,
        }
    }
}

/// `SET` statements (after the keyword): a transaction's mode, a user variable, or a
/// session variable.
fn set_reason(rest: &str) -> PinReason {
    let rest = rest.trim_start();
    // `SET STATEMENT var = value FOR stmt` (MariaDB) changes nothing after the statement,
    // but the statement itself is unknown: pin as any statement.
    if rest.starts_with("STATEMENT") {
        return PinReason::Statement;
    }
    if rest.starts_with("TRANSACTION")
        || rest.starts_with("SESSION TRANSACTION")
        || rest.contains("AUTOCOMMIT")
    {
        return PinReason::Transaction;
    }
    if has_user_variable(rest) {
        return PinReason::UserVar;
    }
    PinReason::SessionVar
}

/// Lock functions and clauses: the lock lives as long as the connection or transaction.
const LOCKS: [&str; 4] = ["GET_LOCK", "RELEASE_", "FOR UPDATE", "LOCK IN SHARE"];

/// Functions whose answer depends on the connection's earlier statements
/// (`SQL_CALC_FOUND_ROWS` contains `FOUND_ROWS`).
const SESSION_FUNCTIONS: [&str; 9] = [
    "FOUND_ROWS",
    "LAST_INSERT_ID",
    "ROW_COUNT",
    "NEXTVAL",
    "LASTVAL",
    "SETVAL",
    "NEXT VALUE",
    "PREVIOUS VALUE",
    "CONNECTION_ID",
];

/// Whether a COM_QUERY text is a single plain `SELECT` that cannot change the session's
/// state on the server or depend on an earlier statement's: no user variable (`@x`;
/// `@@system` reads are fine), no `INTO`, no locks (`GET_LOCK`, `FOR UPDATE`, `LOCK IN
/// SHARE MODE`), no `FOUND_ROWS`/`SQL_CALC_FOUND_ROWS`, `LAST_INSERT_ID`, `ROW_COUNT`,
/// sequences (`NEXTVAL`, `LASTVAL`, `SETVAL`, `NEXT VALUE`, `PREVIOUS VALUE`),
/// `CONNECTION_ID`, no executable comment (`/*!`) and no second statement (`;`). Stored
/// functions that change session state are not seen (documented).
pub fn plain_read(sql: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(sql) else {
        return false;
    };
    let upper = text.to_ascii_uppercase();
    let body = skip_space_and_comments(&upper);
    let Some(rest) = body.strip_prefix("SELECT") else {
        return false;
    };
    if !rest.starts_with(|c: char| c.is_ascii_whitespace() || c == '(' || c == '*' || c == '/') {
        return false;
    }
    const PINNING: [&str; 3] = ["INTO", "/*!", ";"];
    if PINNING.iter().any(|w| upper.contains(w))
        || LOCKS.iter().any(|w| upper.contains(w))
        || SESSION_FUNCTIONS.iter().any(|w| upper.contains(w))
    {
        return false;
    }
    !has_user_variable(&upper)
}

/// `@name` (a user variable) anywhere; `@@name` (a system variable) does not count.
fn has_user_variable(sql: &str) -> bool {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'@' {
            if b.get(i + 1) == Some(&b'@') {
                i += 2;
                continue;
            }
            return true;
        }
        i += 1;
    }
    false
}

/// `sql` after leading whitespace and `/* ... */`, `-- ...` and `# ...` comments (an
/// executable `/*!` comment is kept, so that it pins).
fn skip_space_and_comments(mut sql: &str) -> &str {
    loop {
        let trimmed = sql.trim_start();
        if trimmed.starts_with("/*") && !trimmed.starts_with("/*!") {
            match trimmed.find("*/") {
                Some(end) => sql = &trimmed[end + 2..],
                None => return trimmed,
            }
        } else if trimmed.starts_with("--") || trimmed.starts_with('#') {
            match trimmed.find('\n') {
                Some(end) => sql = &trimmed[end + 1..],
                None => return "",
            }
        } else {
            return trimmed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{plain_read, PinReason};
    use proptest::prelude::*;

    proptest! {
        /// Any bytes a client sends as a query: a verdict, never a panic; and a plain
        /// read never contains what pins.
        #[test]
        fn any_query_text_gets_a_verdict(sql in proptest::collection::vec(any::<u8>(), 0..200)) {
            let reason = PinReason::of_query(&sql);
            if plain_read(&sql) {
                let text = String::from_utf8(sql).unwrap().to_ascii_uppercase();
                prop_assert!(!text.contains(';') && !text.contains("INTO"));
                prop_assert_eq!(reason, PinReason::Statement, "{}", text);
            }
        }

        /// Text with any characters (multi-byte ones next to keywords): never a panic.
        #[test]
        fn any_query_string_gets_a_reason(pre in "\\PC{0,8}", word in "(SET|CREATE|BEGIN|SELECT)?", post in "\\PC{0,30}") {
            let sql = format!("{pre}{word}{post}");
            let _ = PinReason::of_query(sql.as_bytes());
            let _ = plain_read(sql.as_bytes());
        }

        #[test]
        fn selects_with_a_user_variable_always_pin(name in "[a-z]{1,8}", pre in "[ a-z0-9,]{0,20}") {
            let sql = format!("SELECT {pre} @{name}");
            prop_assert!(!plain_read(sql.as_bytes()));
            prop_assert_eq!(PinReason::of_query(sql.as_bytes()), PinReason::UserVar);
        }
    }

    #[test]
    fn plain_selects_share_and_anything_with_state_pins() {
        for shared in [
            "SELECT 1",
            "select c from sbtest1 where id = 5",
            "  /* app=web */ SELECT * FROM t",
            "-- note\nSELECT(1)",
            "SELECT @@version, @@SESSION.sql_mode",
        ] {
            assert!(plain_read(shared.as_bytes()), "{shared}");
        }
        for pinned in [
            "INSERT INTO t VALUES (1)",
            "SET @a = 1",
            "SELECT @a := 1",
            "SELECT @a",
            "SELECT 1 INTO @x",
            "SELECT GET_LOCK('x', 1)",
            "SELECT * FROM t FOR UPDATE",
            "SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1",
            "SELECT FOUND_ROWS()",
            "SELECT LAST_INSERT_ID()",
            "SELECT NEXTVAL(s)",
            "SELECT CONNECTION_ID()",
            "SELECT 1; SET autocommit = 0",
            "/*!40101 SET NAMES utf8 */",
            "BEGIN",
            "USE other",
            "SELECTED",
            // A quoted '@' pins too: the check does not parse strings (conservative).
            "SELECT 'a@b'",
            "",
        ] {
            assert!(!plain_read(pinned.as_bytes()), "{pinned}");
        }
        assert!(!plain_read(&[0xff, 0xfe]), "not UTF-8");
    }

    #[test]
    fn each_pinning_query_names_what_ties_the_session() {
        use PinReason::*;
        for (sql, want) in [
            ("BEGIN", Transaction),
            ("begin work", Transaction),
            ("START TRANSACTION READ ONLY", Transaction),
            ("/* app */ start transaction", Transaction),
            ("XA START 'x'", Transaction),
            ("SET autocommit = 0", Transaction),
            ("SET @@session.autocommit=0", Transaction),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", Transaction),
            ("CREATE TEMPORARY TABLE t (x INT)", TempTable),
            ("create or replace temporary table t (x int)", TempTable),
            ("DROP TEMPORARY TABLE t", TempTable),
            ("DROP TABLE t", Statement),
            ("SET @mine = 7", UserVar),
            ("set @a := 1, @b := 2", UserVar),
            ("SELECT @a := 1", UserVar),
            ("SELECT id INTO @x FROM t LIMIT 1", UserVar),
            ("SELECT @a", UserVar),
            ("SET NAMES utf8mb4", SessionVar),
            ("SET SESSION sql_mode = ''", SessionVar),
            ("set character set utf8", SessionVar),
            ("SELECT GET_LOCK('job', 10)", Lock),
            ("SELECT RELEASE_ALL_LOCKS()", Lock),
            ("LOCK TABLES t WRITE", Lock),
            ("UNLOCK TABLES", Lock),
            ("SELECT * FROM t WHERE id = 1 FOR UPDATE", Lock),
            ("PREPARE s FROM 'SELECT 1'", PreparedStatement),
            ("EXECUTE s", PreparedStatement),
            ("USE shop", Schema),
            ("SELECT LAST_INSERT_ID()", SessionFunction),
            (
                "SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1",
                SessionFunction,
            ),
            ("SELECT CONNECTION_ID()", SessionFunction),
            ("SELECT NEXT VALUE FOR s", SessionFunction),
            ("SELECT 1; SELECT 2", MultiStatement),
            ("INSERT INTO t VALUES (1)", Write),
            ("update t set x = 1", Write),
            ("DELETE FROM t", Write),
            ("REPLACE INTO t VALUES (1)", Write),
            ("CREATE TABLE t (x INT)", Statement),
            ("CALL proc()", Statement),
            ("SHOW TABLES", Statement),
            ("/*!40101 SELECT 1 */", Statement),
            ("SET STATEMENT max_statement_time=1 FOR SELECT 1", Statement),
            ("BEGINNING", Statement),
            ("", Statement),
        ] {
            assert_eq!(PinReason::of_query(sql.as_bytes()), want, "{sql}");
        }
        assert_eq!(PinReason::of_query(&[0xff, 0xfe]), Statement, "not UTF-8");
    }

    #[test]
    fn each_pinning_command_names_what_ties_the_session() {
        use PinReason::*;
        for (command, want) in [
            (0x02, Schema),            // COM_INIT_DB
            (0x16, PreparedStatement), // COM_STMT_PREPARE
            (0x17, PreparedStatement), // COM_STMT_EXECUTE
            (0x1c, PreparedStatement), // COM_STMT_FETCH
            (0x1b, SessionVar),        // COM_SET_OPTION
            (0x04, Command),           // COM_FIELD_LIST
            (0x09, Command),           // COM_STATISTICS
        ] {
            assert_eq!(PinReason::of_command(command, b""), want, "{command:#x}");
        }
        assert_eq!(PinReason::of_command(0x03, b"BEGIN"), Transaction);
    }
}
