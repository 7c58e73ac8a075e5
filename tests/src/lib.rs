pub mod abuse;
pub mod dnsperf;
pub mod fake_marathon;
pub mod lcg;
pub mod metrics;
pub mod pki;
pub mod servers;
