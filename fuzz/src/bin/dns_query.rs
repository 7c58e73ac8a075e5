//! AFL++ entry point of the `dns_query` target; the body is [`ocean_fuzz::dns_query`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        ocean_fuzz::dns_query(data);
    });
}
