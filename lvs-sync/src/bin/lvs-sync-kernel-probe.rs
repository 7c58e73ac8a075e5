//! A test tool, not part of `ocean`: checks the netlink backend's error mapping against a
//! real kernel (run inside the qemu test's VM, `tests/kernel.rs`): adding what exists is EEXIST, touching a missing service is ESRCH, a missing
//! destination ENOENT, and `apply_plan` turns a stale plan into its idempotent counterpart.
//! Prints `PROBE OK` or the first mismatch; uses VIP 10.0.0.200, which nothing else uses.

use ocean_lvs_sync::model::{Dest, Forward, IpvsError, Service, ServiceKey};
use ocean_lvs_sync::netlink::NetlinkIpvs;
use ocean_lvs_sync::plan::{apply_plan, Op, Plan};

fn main() -> std::process::ExitCode {
    match probe() {
        Ok(()) => {
            println!("PROBE OK");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            println!("PROBE FAILED: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn expect(
    what: &str,
    got: Result<(), IpvsError>,
    want: Result<(), IpvsError>,
) -> Result<(), String> {
    if got == want {
        println!("probe: {what}: {got:?}");
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

fn probe() -> Result<(), String> {
    let mut k = NetlinkIpvs::open().map_err(|e| e.to_string())?;
    let key = ServiceKey::tcp("10.0.0.200:80".parse().map_err(|_| "addr")?);
    let svc = Service::new(key, "rr");
    let addr = "10.1.0.200:80".parse().map_err(|_| "addr")?;
    let d = Dest::new(addr, 1, Forward::Dr);
    let missing = ServiceKey::tcp("10.0.0.201:80".parse().map_err(|_| "addr")?);

    expect(
        "add service",
        k.apply_op(&Op::AddService(svc.clone())),
        Ok(()),
    )?;
    expect(
        "add service again",
        k.apply_op(&Op::AddService(svc.clone())),
        Err(IpvsError::ServiceExists(key)),
    )?;
    expect("add dest", k.apply_op(&Op::AddDest(key, d.clone())), Ok(()))?;
    expect(
        "add dest again",
        k.apply_op(&Op::AddDest(key, d.clone())),
        Err(IpvsError::DestExists(key, addr)),
    )?;
    let other = Dest::new("10.1.0.201:80".parse().map_err(|_| "addr")?, 1, Forward::Dr);
    expect(
        "edit missing dest",
        k.apply_op(&Op::EditDest(key, other.clone())),
        Err(IpvsError::NoDest(key, other.addr)),
    )?;
    expect(
        "delete missing dest",
        k.apply_op(&Op::DelDest(key, other.addr)),
        Err(IpvsError::NoDest(key, other.addr)),
    )?;
    expect(
        "add dest to missing service",
        k.apply_op(&Op::AddDest(missing, d.clone())),
        Err(IpvsError::NoService(missing)),
    )?;
    expect(
        "delete missing service",
        k.apply_op(&Op::DelService(missing)),
        Err(IpvsError::NoService(missing)),
    )?;
    let mut bad = svc.clone();
    bad.scheduler = "nosuch".into();
    match k.apply_op(&Op::EditService(bad)) {
        Err(IpvsError::Other(m)) if m.contains("no scheduler") => {
            println!("probe: unknown scheduler: {m}")
        }
        other => return Err(format!("unknown scheduler: got {other:?}")),
    }

    // A stale plan (everything already done or already gone) converges without errors.
    let mut heavier = d.clone();
    heavier.weight = 9;
    let stale = Plan {
        ops: vec![
            Op::AddService(svc.clone()),
            Op::AddDest(key, heavier.clone()),
            Op::DelDest(key, other.addr),
            Op::DelService(missing),
        ],
        ..Plan::default()
    };
    let r = apply_plan(&mut k, &stale);
    if !r.errors.is_empty() || r.converted != 4 {
        return Err(format!("stale plan: {r:?}"));
    }
    let table = k.read().map_err(|e| e.to_string())?;
    let got = table
        .get(&key)
        .and_then(|e| e.dests.get(&addr))
        .map(|d| d.weight);
    if got != Some(9) {
        return Err(format!(
            "EEXIST on add dest did not become an edit: weight {got:?}"
        ));
    }
    println!("probe: stale plan converted {} ops", r.converted);
    k.apply_op(&Op::DelService(key)).map_err(|e| e.to_string())
}
