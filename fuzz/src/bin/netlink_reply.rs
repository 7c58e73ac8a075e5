//! AFL++ entry point of the `netlink_reply` target; the body is [`ocean_fuzz::netlink_reply`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        ocean_fuzz::netlink_reply(data);
    });
}
