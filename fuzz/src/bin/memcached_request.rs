//! AFL++ entry point of the `memcached_request` target; the body is [`ocean_fuzz::memcached_request`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        ocean_fuzz::memcached_request(data);
    });
}
