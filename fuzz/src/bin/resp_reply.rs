//! AFL++ entry point of the `resp_reply` target; the body is [`ocean_fuzz::resp_reply`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        ocean_fuzz::resp_reply(data);
    });
}
