//! AFL++ entry point of the `dns_respond` target; the body is [`ocean_fuzz::dns_respond`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        ocean_fuzz::dns_respond(data);
    });
}
