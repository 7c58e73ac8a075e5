//! AFL++ entry point of the `proxy_v2` target; the body is [`ocean_fuzz::proxy_v2`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        ocean_fuzz::proxy_v2(data);
    });
}
