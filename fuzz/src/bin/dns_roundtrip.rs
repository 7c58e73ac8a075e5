//! AFL++ entry point of the `dns_roundtrip` target; the body is [`ocean_fuzz::dns_roundtrip`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        ocean_fuzz::dns_roundtrip(data);
    });
}
