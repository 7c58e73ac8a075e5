//! AFL++ entry point of the `marathon_sse` target; the body is [`ocean_fuzz::marathon_sse`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        ocean_fuzz::marathon_sse(data);
    });
}
