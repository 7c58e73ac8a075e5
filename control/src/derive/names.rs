//! Mesos-DNS naming, ported from its `records/labels` and `records/generator.go` so that
//! names answered by `ocean dns` equal the ones Mesos-DNS gives for Marathon tasks.

use sha1::{Digest, Sha1};

/// Marathon's task name for an app id: the path reversed and dotted (`/group/app` -> `app.group`).
pub fn task_name(app_id: &str) -> String {
    let parts: Vec<&str> = app_id.split('/').filter(|p| !p.is_empty()).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join(".")
}

/// Mesos-DNS's label function: lowercase, `[a-z0-9]` kept, `-._` become `-`, everything
/// else dropped, then trimmed and cut to `maxlen` (63 for RFC 1123, 24 for RFC 952, which
/// also strips leading digits).
pub fn label(name: &str, rfc952: bool) -> String {
    let (maxlen, left) = if rfc952 {
        (24, "-0123456789")
    } else {
        (63, "-")
    };
    let mapped: String = name
        .chars()
        .filter_map(|c| match c {
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            'a'..='z' | '0'..='9' => Some(c),
            '-' | '.' | '_' => Some('-'),
            _ => None,
        })
        .collect();
    trim_cut(&mapped, maxlen, left)
}

fn trim_cut(label: &str, maxlen: usize, left: &str) -> String {
    // All bytes are ASCII here, so byte slicing is on char boundaries.
    let trim = label.trim_start_matches(|c| left.contains(c));
    let size = trim.len().min(maxlen);
    let head = trim[..size].trim_end_matches('-');
    if head.len() == size {
        return head.to_string();
    }
    let tail = trim[size..].trim_start_matches('-');
    let room = size - head.len();
    let mut out = head.to_string();
    out.push_str(&tail[..tail.len().min(room)]);
    out
}

const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// Mesos-DNS's `hashString`: the first 5 characters of the z-base-32 encoded SHA-1.
pub fn task_hash(task_id: &str) -> String {
    let digest = Sha1::digest(task_id.as_bytes());
    // 5 characters x 5 bits = 25 bits: the first 4 bytes are enough.
    let bits = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (0..5)
        .map(|i| ZBASE32[((bits >> (27 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// The lowercased last `-`-separated field of an agent id (`...-S1` -> `s1`).
pub fn slave_tail(slave_id: &str) -> String {
    slave_id
        .rsplit('-')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_mesos_dns_vectors() {
        assert_eq!(task_hash("test"), "iffe9");
        assert_eq!(
            task_hash("liquor-store.b8db9f73-562f-11e4-a088-c20493233aa5"),
            "4dfjd"
        );
        assert_eq!(
            task_hash("liquor-store.b71166c1-562f-11e4-a088-c20493233aa5"),
            "zasmd"
        );
        assert_eq!(
            task_hash("car-store.43758382-562f-11e4-a088-c20493233aa5"),
            "zinaz"
        );
        assert_eq!(
            task_hash("nginx.48dccce7-90bc-11e6-ae70-70b3d5800001"),
            "jhy6r"
        );
    }

    #[test]
    fn labels_match_mesos_dns_vectors() {
        let both = [
            ("a.b.c.d.e", "a-b-c-d-e"),
            ("a.c.d_de.", "a-c-d-de"),
            ("---a---b", "a---b"),
            ("r29f.dev.angrypigs", "r29f-dev-angrypigs"),
            ("app.group", "app-group"),
            ("My_App.Group", "my-app-group"),
        ];
        for (input, want) in both {
            assert_eq!(label(input, false), want, "1123 {input}");
            assert_eq!(label(input, true), want, "952 {input}");
        }
        assert_eq!(label("4abc123", true), "abc123");
        assert_eq!(label("4abc123", false), "4abc123");
        assert_eq!(
            label("fd%gsf---gs7-f$gs--d7fddg-123", true),
            "fdgsf---gs7-fgs--d7fddg1"
        );
        assert_eq!(
            label("fd%gsf---gs7-f$gs--d7fddg-123", false),
            "fdgsf---gs7-fgs--d7fddg-123"
        );
        assert_eq!(label(&format!("hello{}f", "-".repeat(58)), false), "hellof");
        assert_eq!(label(&"a".repeat(70), false), "a".repeat(63));
        assert_eq!(label(&"a".repeat(70), true), "a".repeat(24));
        assert_eq!(label("2048-game", true), "game");
    }

    #[test]
    fn task_names_and_slave_tails() {
        assert_eq!(task_name("/group/app"), "app.group");
        assert_eq!(task_name("/a/b/c"), "c.b.a");
        assert_eq!(task_name("/app"), "app");
        assert_eq!(slave_tail("20140803-125133-3041283216-5050-2410-0"), "0");
        assert_eq!(slave_tail("db7b40e2-791c-445f-b373-183e2a648a86-S1"), "s1");
    }
}
