//! AFL++ entry point of the `mysql_packet` target; the body is [`ocean_fuzz::mysql_packet`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        ocean_fuzz::mysql_packet(data);
    });
}
