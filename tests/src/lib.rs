pub mod fake_marathon;
pub mod servers;
