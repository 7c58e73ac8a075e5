//! AFL++ entry point of the `table_json` target; the body is [`ocean_fuzz::table_json`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        ocean_fuzz::table_json(data);
    });
}
