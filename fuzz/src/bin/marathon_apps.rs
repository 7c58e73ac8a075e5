//! AFL++ entry point of the `marathon_apps` target; the body is [`ocean_fuzz::marathon_apps`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        ocean_fuzz::marathon_apps(data);
    });
}
