//! A small parsed view of backend replies, for the few replies the router must read rather
//! than relay (slot maps, SCAN/KEYS/DBSIZE merging, pub/sub subscription counts).
//!
//! Input is always one complete reply already checked by [`crate::proto::ReplyScanner`], so
//! the parser only has to be total, not fast.

use bytes::Bytes;

/// One RESP2/RESP3 value. RESP3 aggregates map onto [`Value::Array`] (maps flattened to
/// key, value, key, value), scalars onto the nearest RESP2 type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+...`
    Simple(Bytes),
    /// `-...` and `!...` (without the sign)
    Error(Bytes),
    /// `:n`
    Int(i64),
    /// `$n` / `=n` / `,` / `(`; `None` for nulls (`$-1`, `_`).
    Bulk(Option<Bytes>),
    /// `*n`, `%n`, `~n`, `>n`; `None` for `*-1`.
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The value as bytes when it is a string of any kind.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Simple(b) | Value::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    /// The value as an integer (integers, or strings holding one).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            v => std::str::from_utf8(v.as_bytes()?).ok()?.parse().ok(),
        }
    }

    /// The elements when it is an aggregate.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(Some(v)) => Some(v),
            _ => None,
        }
    }
}

/// Parses one complete reply at the start of `buf`; `None` when it is not valid RESP.
pub fn parse(buf: &Bytes) -> Option<Value> {
    let mut pos = 0;
    parse_at(buf, &mut pos, 0)
}

fn line<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = buf.get(*pos..)?;
    let cr = rest.windows(2).position(|w| w == b"\r\n")?;
    let l = rest.get(..cr)?;
    *pos += cr + 2;
    Some(l)
}

fn num(l: &[u8]) -> Option<i64> {
    std::str::from_utf8(l).ok()?.parse().ok()
}

fn parse_at(buf: &Bytes, pos: &mut usize, depth: usize) -> Option<Value> {
    if depth > 64 {
        return None;
    }
    let tag = *buf.get(*pos)?;
    *pos += 1;
    let start = *pos;
    let l = line(buf, pos)?;
    let body = || buf.slice(start..start + l.len());
    Some(match tag {
        b'+' => Value::Simple(body()),
        b'-' => Value::Error(body()),
        b':' => Value::Int(num(l)?),
        b',' | b'(' => Value::Bulk(Some(body())),
        b'#' => Value::Int(i64::from(l == b"t")),
        b'_' => Value::Bulk(None),
        b'$' | b'=' | b'!' => {
            let n = num(l)?;
            if n < 0 {
                return Some(Value::Bulk(None));
            }
            let n = usize::try_from(n).ok()?;
            let data_start = *pos;
            if buf.len() < data_start + n + 2 {
                return None;
            }
            *pos = data_start + n + 2;
            let data = buf.slice(data_start..data_start + n);
            match tag {
                b'!' => Value::Error(data),
                // Verbatim strings carry a `txt:` prefix.
                b'=' => Value::Bulk(Some(if n >= 4 { data.slice(4..) } else { data })),
                _ => Value::Bulk(Some(data)),
            }
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = num(l)?;
            if n < 0 {
                return Some(Value::Array(None));
            }
            let per = if matches!(tag, b'%' | b'|') { 2 } else { 1 };
            let count = usize::try_from(n).ok()?.checked_mul(per)?;
            let mut items = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                items.push(parse_at(buf, pos, depth + 1)?);
            }
            if tag == b'|' {
                // An attribute annotates the value that follows: skip it.
                return parse_at(buf, pos, depth);
            }
            Value::Array(Some(items))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resp2_and_resp3() {
        let v = parse(&Bytes::from_static(b"*3\r\n$3\r\nfoo\r\n:5\r\n$-1\r\n")).unwrap();
        assert_eq!(
            v,
            Value::Array(Some(vec![
                Value::Bulk(Some(Bytes::from_static(b"foo"))),
                Value::Int(5),
                Value::Bulk(None)
            ]))
        );
        let v = parse(&Bytes::from_static(b"%1\r\n+a\r\n#t\r\n")).unwrap();
        assert_eq!(v.as_array().map(|a| a.len()), Some(2));
        assert!(parse(&Bytes::from_static(b"*2\r\n:1\r\n")).is_none());
        assert!(parse(&Bytes::from_static(b"$5\r\nab\r\n")).is_none());
    }
}
