//! Marathon: the JSON it serves, the REST client and the event stream.

pub mod client;
pub mod events;
pub mod model;
