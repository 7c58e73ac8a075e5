//! Real-kernel end-to-end test: boots Debian's kernel under qemu (TCG, no KVM needed) with a
//! busybox initramfs holding `ipvsadm` and this crate's `ocean-lvs-sync` binary, and checks
//! `ipvsadm -Ln` after each reconcile:
//! 1. a foreign service added by ipvsadm first; table 1 applied with `--once --backend
//!    netlink` (one entry outside `--vip` refused, the rest applied);
//! 2. the same table again: zero writes;
//! 3. table 2: a weight change, a real server with connections removed (-> weight 0,
//!    draining), an owned service removed, a scheduler edited in place; the foreign service
//!    untouched throughout; thresholds an operator set with `ipvsadm -x/-y` survive the
//!    weight change and the drain; the drain's start survives the process (the next
//!    process does not count it as a new removal, and ends it at its original deadline);
//! 4. scale: 100 services x 10 real servers from empty, then a no-change resync (times
//!    printed; `LVS_SYNC_KERNEL_SCALE=1000x20` for a bigger run);
//! 5. the printing backends' output applied by ipvsadm;
//! 6. an SCTP service (with thresholds) is read and left alone, even by `--force` with an
//!    empty table that deletes every service Ocean owns.
//!
//! The kernel comes from `lvs-sync/tests/qemu/fetch-kernel.sh` (run here into the target dir
//! when missing; it needs the Debian mirror). Needs qemu-system-x86, busybox-static, ipvsadm.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn need(path: &str, package: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "{path} is missing: install the Debian package {package} (apt-get install {package})"
    );
    p
}

fn kernel_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu-kernel");
    if dir.join("modules.order").exists() && dir.join("vmlinuz").exists() {
        return dir;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/qemu/fetch-kernel.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success() && dir.join("modules.order").exists(),
        "no kernel for the IPVS test: lvs-sync/tests/qemu/fetch-kernel.sh {} failed \
         (it needs apt-get and the Debian mirror):\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// A cpio archive in the `newc` format the kernel unpacks as an initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
    dirs: std::collections::BTreeSet<String>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        let mut h = String::from("070701");
        for f in fields {
            h.push_str(&format!("{f:08X}"));
        }
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
        self.out.extend_from_slice(data);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn parents(&mut self, path: &str) {
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..parts.len() {
            let d = parts[..i].join("/");
            if self.dirs.insert(d.clone()) {
                self.entry(&d, 0o040755, &[]);
            }
        }
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        let path = path.trim_start_matches('/');
        self.parents(path);
        self.entry(path, 0o100000 | mode, data);
    }

    fn dir(&mut self, path: &str) {
        let path = path.trim_start_matches('/');
        self.parents(&format!("{path}/x"));
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// The shared libraries `ldd` names for `bin` (including the loader).
fn libs(bin: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .unwrap_or_else(|e| panic!("ldd {}: {e} (install libc-bin)", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = if let Some((_, rest)) = line.split_once("=> ") {
            rest.split_whitespace().next()
        } else if line.starts_with('/') {
            line.split_whitespace().next()
        } else {
            None
        };
        if let Some(p) = path {
            if p.starts_with('/') {
                v.push(PathBuf::from(p));
            }
        }
    }
    v
}

/// The binary without debug info (an initramfs of 130 MB would need a big VM), or as is
/// when `strip` is not there.
fn stripped(bin: &Path) -> Vec<u8> {
    let name = bin.file_name().unwrap().to_string_lossy().to_string();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.stripped"));
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .is_ok_and(|s| s.success());
    std::fs::read(if ok { out.as_path() } else { bin }).unwrap()
}

fn table_json(services: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(&serde_json::json!({ "services": services })).unwrap()
}

fn real(ip: &str, port: u16, weight: u32, forward: &str) -> serde_json::Value {
    serde_json::json!({"ip": ip, "port": port, "weight": weight, "forward": forward})
}

fn svc(
    vip: &str,
    port: u16,
    proto: &str,
    sched: &str,
    persistence: Option<u32>,
    reals: Vec<serde_json::Value>,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "vip": vip, "port": port, "protocol": proto, "scheduler": sched, "reals": reals
    });
    if let Some(p) = persistence {
        v["persistence_s"] = p.into();
    }
    v
}

fn table1() -> Vec<u8> {
    table_json(serde_json::json!([
        svc(
            "10.0.0.1",
            80,
            "tcp",
            "wrr",
            None,
            vec![
                real("10.1.0.1", 80, 1, "dr"),
                real("10.1.0.2", 80, 2, "dr"),
                real("10.1.0.3", 80, 3, "dr"),
            ]
        ),
        svc(
            "10.0.0.2",
            8080,
            "tcp",
            "rr",
            Some(600),
            vec![
                real("10.1.0.4", 9090, 1, "nat"),
                real("10.1.0.5", 9090, 1, "nat"),
            ]
        ),
        svc(
            "10.0.0.3",
            53,
            "udp",
            "sh",
            None,
            vec![real("10.1.0.6", 5353, 1, "tunnel")]
        ),
        svc(
            "2001:db8::1",
            443,
            "tcp",
            "rr",
            None,
            vec![real("2001:db8::10", 443, 1, "dr")]
        ),
        // bad entries, each refused on its own, the rest applied:
        // outside --vip
        svc(
            "172.16.0.1",
            80,
            "tcp",
            "rr",
            None,
            vec![real("10.1.0.9", 80, 1, "dr")]
        ),
        // a duplicate service
        svc(
            "10.0.0.5",
            80,
            "tcp",
            "rr",
            None,
            vec![real("10.1.0.9", 80, 1, "dr")]
        ),
        svc(
            "10.0.0.5",
            80,
            "tcp",
            "wrr",
            None,
            vec![real("10.1.0.9", 80, 2, "dr")]
        ),
        // an unknown scheduler
        svc(
            "10.0.0.6",
            80,
            "tcp",
            "fastest",
            None,
            vec![real("10.1.0.9", 80, 1, "dr")]
        ),
        // port 0
        svc(
            "10.0.0.7",
            0,
            "tcp",
            "rr",
            None,
            vec![real("10.1.0.9", 80, 1, "dr")]
        ),
        // a weight over the kernel's limit (the service itself is applied)
        svc(
            "10.0.0.8",
            80,
            "tcp",
            "rr",
            None,
            vec![
                real("10.1.0.8", 80, 70000, "dr"),
                real("10.1.0.9", 80, 1, "dr"),
            ]
        ),
    ]))
}

/// Table 2 without the UDP service.
fn table3() -> Vec<u8> {
    let mut t: serde_json::Value = serde_json::from_slice(&table2()).unwrap();
    let list = t["services"].as_array_mut().unwrap();
    list.retain(|s| s["protocol"] != "udp");
    serde_json::to_vec(&t).unwrap()
}

fn table2() -> Vec<u8> {
    table_json(serde_json::json!([
        // 10.1.0.1 weight 1 -> 5; 10.1.0.3 leaves while it has connections -> weight 0
        svc(
            "10.0.0.1",
            80,
            "tcp",
            "wrr",
            None,
            vec![real("10.1.0.1", 80, 5, "dr"), real("10.1.0.2", 80, 2, "dr"),]
        ),
        // 10.0.0.2:8080 removed: ours (state file), so deleted
        svc(
            "10.0.0.3",
            53,
            "udp",
            "sh",
            None,
            vec![real("10.1.0.6", 5353, 1, "tunnel")]
        ),
        // scheduler edited in place
        svc(
            "2001:db8::1",
            443,
            "tcp",
            "wlc",
            None,
            vec![real("2001:db8::10", 443, 1, "dr")]
        ),
    ]))
}

fn scale_table(services: usize, reals: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for s in 0..services {
        let vip = format!("10.2.{}.{}", s / 250, s % 250 + 1);
        let rs = (0..reals)
            .map(|r| {
                real(
                    &format!("10.3.{}.{}", s % 250, r + 1),
                    80,
                    1 + r as u32,
                    "dr",
                )
            })
            .collect();
        v.push(svc(&vip, 80, "tcp", "wrr", None, rs));
    }
    table_json(serde_json::Value::Array(v))
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
# a local source address and a route, so local clients can open connections to the VIPs
ip link set lo up
ip addr add 10.9.9.9/32 dev lo
ip route add 10.0.0.0/8 dev lo src 10.9.9.9
for m in $(cat /modules.order); do insmod /modules/$m || echo "===INSMOD-FAILED $m"; done
/probe; echo "===RCP $?"
ipvsadm -A -t 192.168.50.1:443 -s lc
ipvsadm -a -t 192.168.50.1:443 -r 192.168.60.1:443 -m -w 5
ipvsadm -A -f 7 -s rr
ipvsadm -a -f 7 -r 192.168.60.2 -g -w 2
S="/lvs-sync --once --backend netlink --state-file /tmp/owned --vip 10.0.0.0/24 --vip 2001:db8::/32 --drain 30s"
export RUST_LOG=info
$S --table-file /t1.json 2>&1; echo "===RC1 $?"
echo "===BEGIN1"; ipvsadm -Ln; echo "===END1"
/lvs-sync --dump-netlink-hex 2>&1
$S --table-file /t1.json 2>&1; echo "===RC2 $?"
# 8 connection attempts over wrr 1:2:3: every real server of 10.0.0.1:80 gets at least one
for i in 1 2 3 4 5 6 7 8; do nc 10.0.0.1 80 </dev/null >/dev/null 2>&1 & done
sleep 1
echo "===BEGINC"; ipvsadm -Ln; echo "===ENDC"
# an operator's thresholds, which Ocean does not manage: table 2 edits both real servers
ipvsadm -e -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 1 -x 100 -y 10; echo "===RCTH $?"
ipvsadm -e -t 10.0.0.1:80 -r 10.1.0.3:80 -g -w 3 -x 50 -y 5
$S --table-file /t2.json 2>&1; echo "===RC3 $?"
echo "===BEGIN2"; ipvsadm -Ln; echo "===END2"
echo "===BEGINT"; ipvsadm -Ln --thresholds; echo "===ENDT"
$S --table-file /t2.json 2>&1; echo "===RC4 $?"
# removing the UDP service and its real server is 2 removals (10.1.0.3 already drains, and
# the state file says so to this new process): refused under --max-delete 1
$S --table-file /t3.json --max-delete 1 2>&1; echo "===RCX $?"
echo "===BEGIN3"; ipvsadm -Ln; echo "===END3"
# the daemon: the drain of 10.1.0.3 began (RC3) more than --drain 2s ago, so it ends at the
# first reconcile even with connections open
D="/lvs-sync --backend netlink --state-file /tmp/owned --vip 10.0.0.0/24 --vip 2001:db8::/32"
$D --drain 2s --resync 1s --table-file /t2.json 2>&1 &
pid=$!
# wait for the drain to end (2 s + a resync tick; a generous bound for a slow emulator)
for i in $(seq 1 60); do sleep 1; ipvsadm -Ln | grep -q '10.1.0.3:80' || break; done
kill $pid; wait $pid; echo "===RCD $?"
echo "===BEGIN4"; ipvsadm -Ln; echo "===END4"
# the 1,100 change lines would slow the serial console more than the kernel
export RUST_LOG=info,ocean_lvs_sync::change=warn
SC="/lvs-sync --once --backend netlink --state-file /tmp/scale-owned --max-delete 100000"
$SC --table-file /scale.json 2>&1; echo "===RC5 $?"
$SC --table-file /scale.json 2>&1; echo "===RC6 $?"
echo "===SCALE-COUNT $(ipvsadm -Ln | grep -c '^TCP  10\.2\.') $(ipvsadm -Ln | grep -c -- '-> 10\.3\.')"
# the printing backends' output is valid ipvsadm commands / `ipvsadm -R` input
ipvsadm -C
V="--vip 10.0.0.0/24 --vip 2001:db8::/32 --table-file /t1.json --once"
/lvs-sync --backend dry-run $V 2>/dev/null > /tmp/dry.sh; echo "===RCDRY $?"
sh -e /tmp/dry.sh; echo "===RCSH $?"
echo "===BEGIN5"; ipvsadm -Ln; echo "===END5"
ipvsadm -C
/lvs-sync --backend ipvsadm-restore $V 2>/dev/null > /tmp/restore.txt; echo "===RCRES $?"
ipvsadm -R < /tmp/restore.txt; echo "===RCIR $?"
echo "===BEGIN6"; ipvsadm -Ln; echo "===END6"
# SCTP: read, never owned or touched, even by --force with an empty table
ipvsadm -C
ipvsadm -A --sctp-service 10.0.0.1:2905 -s rr; echo "===RCSCTP $?"
ipvsadm -a --sctp-service 10.0.0.1:2905 -r 10.1.0.7:2905 -m -w 4 -x 40 -y 4
F="/lvs-sync --once --backend netlink --state-file /tmp/sctp-owned --vip 10.0.0.0/24 --vip 2001:db8::/32"
$F --table-file /t1.json 2>&1; echo "===RC7 $?"
$F --table-file /empty.json --force 2>&1; echo "===RC8 $?"
echo "===BEGIN7"; ipvsadm -Ln --thresholds; echo "===END7"
echo "===DONE"
poweroff -f
"#;

/// Services x real servers of the scale run.
fn scale() -> (usize, usize) {
    std::env::var("LVS_SYNC_KERNEL_SCALE")
        .ok()
        .and_then(|v| {
            let (a, b) = v.split_once('x')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((100, 10))
}

fn build_initramfs(kernel: &Path, bin: &Path) -> Vec<u8> {
    let busybox = need("/bin/busybox", "busybox-static");
    let ipvsadm = need("/usr/sbin/ipvsadm", "ipvsadm");
    let mut c = Cpio::default();
    for d in ["proc", "sys", "dev", "tmp", "sbin", "usr/bin", "usr/sbin"] {
        c.dir(d);
    }
    c.file("bin/busybox", 0o755, &std::fs::read(&busybox).unwrap());
    c.file("usr/sbin/ipvsadm", 0o755, &std::fs::read(&ipvsadm).unwrap());
    c.file("lvs-sync", 0o755, &stripped(bin));
    // the error-mapping probe (src/bin/lvs-sync-kernel-probe.rs)
    let probe = PathBuf::from(env!("CARGO_BIN_EXE_lvs-sync-kernel-probe"));
    c.file("probe", 0o755, &stripped(&probe));
    let mut seen = std::collections::BTreeSet::new();
    for lib in libs(&ipvsadm).into_iter().chain(libs(bin)) {
        if seen.insert(lib.clone()) {
            let data = std::fs::read(std::fs::canonicalize(&lib).unwrap()).unwrap();
            c.file(lib.to_str().unwrap(), 0o755, &data);
        }
    }
    let order = std::fs::read_to_string(kernel.join("modules.order")).unwrap();
    for m in order.split_whitespace() {
        c.file(
            &format!("modules/{m}"),
            0o644,
            &std::fs::read(kernel.join("modules").join(m)).unwrap(),
        );
    }
    c.file("modules.order", 0o644, order.as_bytes());
    c.file("t1.json", 0o644, &table1());
    c.file("t2.json", 0o644, &table2());
    c.file("t3.json", 0o644, &table3());
    c.file("empty.json", 0o644, &table_json(serde_json::json!([])));
    let (services, reals) = scale();
    c.file("scale.json", 0o644, &scale_table(services, reals));
    c.file("init", 0o755, INIT.as_bytes());
    c.finish()
}

fn boot(kernel: &Path, initrd: &Path) -> String {
    let qemu = need("/usr/bin/qemu-system-x86_64", "qemu-system-x86");
    let mut child = Command::new(qemu)
        .args(["-kernel"])
        .arg(kernel.join("vmlinuz"))
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet",
            "-nographic",
            "-no-reboot",
            "-m",
            "1024",
            "-smp",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = reader.join().unwrap();
    String::from_utf8_lossy(&out).replace('\r', "")
}

fn between<'a>(out: &'a str, begin: &str, end: &str) -> &'a str {
    let b = out
        .find(begin)
        .unwrap_or_else(|| panic!("no {begin} in the console output:\n{out}"));
    let rest = &out[b + begin.len()..];
    let e = rest
        .find(end)
        .unwrap_or_else(|| panic!("no {end} in the console output:\n{out}"));
    &rest[..e]
}

/// `ipvsadm -Ln` as lines without the connection counters (which depend on timing).
fn table_lines(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter(|l| {
            l.starts_with("TCP")
                || l.starts_with("UDP")
                || l.starts_with("FWM")
                || l.starts_with("  ->")
        })
        .filter(|l| !l.contains("RemoteAddress"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f[0] == "->" {
                format!("  -> {} {} {}", f[1], f[2], f[3])
            } else {
                f.join(" ")
            }
        })
        .collect()
}

/// Upper and lower thresholds per real server in an `ipvsadm -Ln --thresholds` listing
/// (`  -> ADDR UTHRESHOLD LTHRESHOLD ACTIVE INACTIVE`).
fn thresholds(listing: &str) -> BTreeMap<String, (u32, u32)> {
    listing
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 4 && f[0] == "->" && f[1] != "RemoteAddress:Port")
        .filter_map(|f| Some((f[1].to_string(), (f[2].parse().ok()?, f[3].parse().ok()?))))
        .collect()
}

/// The active + inactive connections of one real server in an `ipvsadm -Ln` listing.
fn conns(listing: &str, real: &str) -> u64 {
    listing
        .lines()
        .filter(|l| l.trim_start().starts_with("->"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 6 && f[1] == real)
        .map(|f| f[4].parse::<u64>().unwrap_or(0) + f[5].parse::<u64>().unwrap_or(0))
        .sum()
}

/// `key=value` fields of the last "reconciled" log line before `marker`.
fn reconciled(out: &str, marker: &str) -> BTreeMap<String, String> {
    let upto = &out[..out
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker}:\n{out}"))];
    let line = upto
        .lines()
        .rev()
        .find(|l| l.contains("reconciled"))
        .unwrap_or_else(|| panic!("no reconcile log before {marker}:\n{out}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

#[test]
fn ipvs_in_a_real_kernel_follows_the_table_beside_a_foreign_service() {
    let kernel = kernel_dir();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ocean-lvs-sync"));
    let initrd = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lvs-sync-initrd.cpio");
    std::fs::write(&initrd, build_initramfs(&kernel, &bin)).unwrap();
    let started = Instant::now();
    let out = boot(&kernel, &initrd);
    eprintln!("VM ran {:.1} s", started.elapsed().as_secs_f64());
    std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("lvs-sync-console.txt"),
        &out,
    )
    .unwrap();
    // failure messages show the console without the scale run's and the raw dump's lines
    let out_msg: String = out
        .lines()
        .filter(|l| !l.starts_with("NLHEX") && !l.contains("10.2.") && !l.contains("10.3."))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(out.contains("===DONE"), "the VM did not finish:\n{out_msg}");
    assert!(
        !out.contains("===INSMOD-FAILED"),
        "a module did not load:\n{out_msg}"
    );

    // 0. the kernel's answers map to the errors apply_plan turns into idempotent retries
    assert!(
        out.contains("PROBE OK") && out.contains("===RCP 0"),
        "the error-mapping probe failed:\n{out_msg}"
    );

    // 1. table 1 applied, one entry refused, the foreign service as it was
    assert!(out.contains("===RC1 0"), "first --once failed:\n{out_msg}");
    for refusal in [
        "services[4] (172.16.0.1:80/tcp) reason=VIP 172.16.0.1 is outside this director's --vip ranges",
        "services[5] (10.0.0.5:80/tcp) reason=duplicate virtual service (listed 2 times)",
        "services[6] (10.0.0.5:80/tcp) reason=duplicate virtual service (listed 2 times)",
        "services[7] (10.0.0.6:80/tcp) reason=unknown scheduler \"fastest\"",
        "services[8] (10.0.0.7:0/tcp) reason=port is 0",
        "services[9] (10.0.0.8:80/tcp) real 10.1.0.8:80 reason=weight 70000 is over the kernel's limit 65535",
    ] {
        assert!(out.contains(refusal), "not refused: {refusal}\n{out_msg}");
    }
    let t1 = table_lines(between(&out, "===BEGIN1", "===END1"));
    let want1 = [
        // ipvsadm's own sort: by family, protocol, then address as a signed difference
        "TCP 192.168.50.1:443 lc",
        "  -> 192.168.60.1:443 Masq 5",
        "TCP 10.0.0.1:80 wrr",
        "  -> 10.1.0.1:80 Route 1",
        "  -> 10.1.0.2:80 Route 2",
        "  -> 10.1.0.3:80 Route 3",
        "TCP 10.0.0.2:8080 rr persistent 600",
        "  -> 10.1.0.4:9090 Masq 1",
        "  -> 10.1.0.5:9090 Masq 1",
        "TCP 10.0.0.8:80 rr",
        "  -> 10.1.0.9:80 Route 1",
        "UDP 10.0.0.3:53 sh",
        "  -> 10.1.0.6:53 Tunnel 1",
        "TCP [2001:db8::1]:443 rr",
        "  -> [2001:db8::10]:443 Route 1",
        // a foreign firewall-mark service
        "FWM 7 rr",
        "  -> 192.168.60.2:0 Route 2",
    ];
    assert_eq!(t1, want1, "after table 1:\n{out_msg}");

    // 2. nothing changed: zero writes
    assert!(out.contains("===RC2 0"), "second --once failed:\n{out_msg}");
    let r2 = reconciled(&out, "===RC2");
    assert_eq!(r2.get("writes").map(String::as_str), Some("0"), "{r2:?}");

    // 3. table 2
    let conns_before = between(&out, "===BEGINC", "===ENDC");
    assert!(
        conns(conns_before, "10.1.0.3:80") > 0,
        "no connection reached 10.1.0.3, the drain cannot be shown:\n{conns_before}"
    );
    assert!(out.contains("===RC3 0"), "third --once failed:\n{out_msg}");
    let t2 = table_lines(between(&out, "===BEGIN2", "===END2"));
    let want2 = [
        // ipvsadm's own sort: by family, protocol, then address as a signed difference
        "TCP 192.168.50.1:443 lc",
        "  -> 192.168.60.1:443 Masq 5",
        "TCP 10.0.0.1:80 wrr",
        "  -> 10.1.0.1:80 Route 5",
        "  -> 10.1.0.2:80 Route 2",
        "  -> 10.1.0.3:80 Route 0",
        "UDP 10.0.0.3:53 sh",
        "  -> 10.1.0.6:53 Tunnel 1",
        "TCP [2001:db8::1]:443 wlc",
        "  -> [2001:db8::10]:443 Route 1",
        // a foreign firewall-mark service
        "FWM 7 rr",
        "  -> 192.168.60.2:0 Route 2",
    ];
    assert_eq!(t2, want2, "after table 2:\n{out_msg}");
    assert!(out.contains("ipvsadm -e -t 10.0.0.1:80 -r 10.1.0.3:80 -g -w 0"));
    assert!(out.contains("ipvsadm -D -t 10.0.0.2:8080"));
    assert!(out.contains("ipvsadm -E -t [2001:db8::1]:443 -s wlc"));
    // the operator's thresholds survived the weight edit and the drain (and Ocean's edits
    // spelled them out: `ipvsadm -e` without -x/-y would reset them)
    assert!(
        out.contains("===RCTH 0"),
        "ipvsadm -x/-y failed:\n{out_msg}"
    );
    assert!(
        out.contains("ipvsadm -e -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 5 -x 100 -y 10"),
        "{out_msg}"
    );
    let th = thresholds(between(&out, "===BEGINT", "===ENDT"));
    assert_eq!(th.get("10.1.0.1:80"), Some(&(100, 10)), "{th:?}\n{out_msg}");
    assert_eq!(th.get("10.1.0.3:80"), Some(&(50, 5)), "{th:?}\n{out_msg}");
    // and again: still draining (connections open), nothing to write
    assert!(out.contains("===RC4 0"), "fourth --once failed:\n{out_msg}");
    assert_eq!(
        table_lines(between(&out, "===BEGIN3", "===END3")),
        want2,
        "{out_msg}"
    );
    // a plan over --max-delete: exit status 1, nothing applied (BEGIN3 above is table 2)
    assert!(
        out.contains("===RCX 1"),
        "--max-delete did not fail --once:\n{out_msg}"
    );
    assert!(
        out.contains("plan would remove 2 services and real servers, over --max-delete 1"),
        "{out_msg}"
    );
    let r4 = reconciled(&out, "===RC4");
    assert_eq!(r4.get("writes").map(String::as_str), Some("0"), "{r4:?}");

    // the daemon ends the drain after --drain and exits 0 on SIGTERM
    assert!(out.contains("===RCD 0"), "the daemon failed:\n{out_msg}");
    let want4: Vec<&str> = want2
        .iter()
        .copied()
        .filter(|l| !l.contains("10.1.0.3"))
        .collect();
    assert_eq!(
        table_lines(between(&out, "===BEGIN4", "===END4")),
        want4,
        "{out_msg}"
    );
    assert!(
        out.contains("ipvsadm -d -t 10.0.0.1:80 -r 10.1.0.3:80"),
        "{out_msg}"
    );

    // 4. scale: 100 x 10 from empty, then no change
    assert!(
        out.contains("===RC5 0") && out.contains("===RC6 0"),
        "{out_msg}"
    );
    let r5 = reconciled(&out, "===RC5");
    let r6 = reconciled(&out, "===RC6");
    let (services, reals) = scale();
    let writes = (services + services * reals).to_string();
    assert_eq!(r5.get("writes"), Some(&writes), "{r5:?}");
    assert_eq!(r6.get("writes").map(String::as_str), Some("0"), "{r6:?}");
    assert!(
        out.contains(&format!("===SCALE-COUNT {services} {}", services * reals)),
        "{out_msg}"
    );
    eprintln!(
        "real kernel (qemu TCG): {services} services x {reals} reals from empty: {} ms; no-change resync: {} ms",
        r5.get("ms").map(String::as_str).unwrap_or("?"),
        r6.get("ms").map(String::as_str).unwrap_or("?")
    );

    // 5. dry-run's commands run by sh, and ipvsadm-restore's input, each from an empty
    //    kernel, make exactly table 1
    for rc in ["===RCDRY 0", "===RCSH 0", "===RCRES 0", "===RCIR 0"] {
        assert!(out.contains(rc), "{rc} missing:\n{out_msg}");
    }
    let want_ours: Vec<&str> = want1
        .iter()
        .copied()
        .filter(|l| !l.contains("192.168.") && !l.starts_with("FWM"))
        .collect();
    for (b, e) in [("===BEGIN5", "===END5"), ("===BEGIN6", "===END6")] {
        assert_eq!(
            table_lines(between(&out, b, e)),
            want_ours,
            "{b}:\n{out_msg}"
        );
    }

    // 6. SCTP: read without error, never touched; --force with an empty table deleted
    //    every service Ocean owned and nothing else
    for rc in ["===RCSCTP 0", "===RC7 0", "===RC8 0"] {
        assert!(out.contains(rc), "{rc} missing:\n{out_msg}");
    }
    let r8 = reconciled(&out, "===RC8");
    assert_eq!(r8.get("services").map(String::as_str), Some("0"), "{r8:?}");
    let left: Vec<String> = between(&out, "===BEGIN7", "===END7")
        .lines()
        .filter(|l| l.starts_with("SCTP") || l.starts_with("TCP") || l.starts_with("UDP"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(left, ["SCTP 10.0.0.1:2905 rr"], "{out_msg}");
    let th = thresholds(between(&out, "===BEGIN7", "===END7"));
    assert_eq!(th.get("10.1.0.7:2905"), Some(&(40, 4)), "{th:?}\n{out_msg}");
    assert_eq!(th.len(), 1, "{th:?}");

    // real GET replies, for the parser's fixture
    let hex: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("NLHEX "))
        .collect();
    assert!(!hex.is_empty(), "no raw dump:\n{out_msg}");
    std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("lvs-sync-netlink-dump.hex"),
        hex.join("\n"),
    )
    .unwrap();
}
