//! AFL++ entry point of the `netlink_roundtrip` target; the body is [`ocean_fuzz::netlink_roundtrip`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        ocean_fuzz::netlink_roundtrip(data);
    });
}
