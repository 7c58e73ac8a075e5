//! AFL++ entry point of the `resp_request` target; the body is [`ocean_fuzz::resp_request`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        ocean_fuzz::resp_request(data);
    });
}
