pub mod fake_marathon;
pub mod pki;
pub mod servers;
