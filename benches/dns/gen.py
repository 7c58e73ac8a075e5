#!/usr/bin/env python3
"""Generates the zone and query files of benches/dns.sh (standard library only).

One made-up Marathon zone, written three ways that answer the same names:

- table.json    the `dns` table `ocean dns --table-file` reads (core/src/table/dns.rs);
- unbound.conf  unbound `local-zone` + `local-data` (the listen port is a placeholder);
- mesos.zone    a zone file for knot (knot.conf is written by dns.sh).

Per app `appN` (N < --apps) with --tasks tasks, Mesos-DNS style:

- `appN.marathon.mesos.`           A  -> every task IP
- `appN.marathon.slave.mesos.`     A  -> every agent IP
- `appN-<hash>-s<k>.marathon.mesos.` and `.marathon.slave.mesos.`  A -> one task's IP
- `_appN._tcp.marathon.mesos.`     SRV -> the per-task names, one port each
- `_appN._tcp.marathon.slave.mesos.` SRV -> the per-task `.slave.` names

Query files (dnsperf format, "name TYPE" per line, shuffled with a fixed seed):

- queries.txt     70% A (app and per-task names), 20% SRV, 10% names that do not exist;
- queries-a.txt   A of existing names only.
"""

import argparse
import ipaddress
import json
import os
import random

DOMAIN = "mesos"
TTL = 60


def build(apps, tasks):
    """Returns {name: {"a": [...], "srv": [(prio, weight, port, target)]}} and the A/SRV names."""
    names = {}
    a_names, srv_names = [], []
    for n in range(apps):
        app = f"app{n}"
        task_a, agent_a, srv, srv_slave = [], [], [], []
        for k in range(tasks):
            # Task IPs: 10.x.y.z, unique per task; agents: 172.16.0.0/16, shared by apps.
            i = n * tasks + k
            task_ip = str(ipaddress.IPv4Address(0x0A000001 + i))
            agent = (n * 7 + k) % 200
            agent_ip = f"172.16.{agent // 250}.{agent % 250 + 1}"
            h = f"{(n * 7919 + k * 104729) % 100000:05d}"
            task_name = f"{app}-{h}-s{agent}.marathon.{DOMAIN}."
            task_slave = f"{app}-{h}-s{agent}.marathon.slave.{DOMAIN}."
            names[task_name] = {"a": [task_ip]}
            names[task_slave] = {"a": [agent_ip]}
            a_names.append(task_name)
            task_a.append(task_ip)
            if agent_ip not in agent_a:
                agent_a.append(agent_ip)
            port = 31000 + (i % 1000)
            srv.append((0, 1, port, task_name))
            srv_slave.append((0, 1, port, task_slave))
        names[f"{app}.marathon.{DOMAIN}."] = {"a": task_a}
        names[f"{app}.marathon.slave.{DOMAIN}."] = {"a": agent_a}
        names[f"_{app}._tcp.marathon.{DOMAIN}."] = {"srv": srv}
        names[f"_{app}._tcp.marathon.slave.{DOMAIN}."] = {"srv": srv_slave}
        # The app name is asked far more often than a single task's name.
        a_names += [f"{app}.marathon.{DOMAIN}."] * 3 + [f"{app}.marathon.slave.{DOMAIN}."]
        srv_names += [f"_{app}._tcp.marathon.{DOMAIN}.", f"_{app}._tcp.marathon.slave.{DOMAIN}."]
    names[f"ns1.{DOMAIN}."] = {"a": ["127.0.0.1"]}
    return names, a_names, srv_names


def table_json(names):
    out = {}
    for name, r in names.items():
        rec = {}
        if r.get("a"):
            rec["a"] = r["a"]
        if r.get("srv"):
            rec["srv"] = [
                {"priority": p, "weight": w, "port": port, "target": t}
                for p, w, port, t in r["srv"]
            ]
        out[name] = rec
    return {
        "domain": DOMAIN,
        "ttl": TTL,
        "soa": {
            "mname": f"ns1.{DOMAIN}.",
            "rname": f"root.ns1.{DOMAIN}.",
            "refresh_s": 60,
            "retry_s": 600,
            "expire_s": 86400,
        },
        "names": out,
    }


def rrs(names):
    """Zone-file lines ("owner TTL IN TYPE data"), SOA and NS first."""
    yield (f"{DOMAIN}. {TTL} IN SOA ns1.{DOMAIN}. root.ns1.{DOMAIN}. "
           f"1 60 600 86400 {TTL}")
    yield f"{DOMAIN}. {TTL} IN NS ns1.{DOMAIN}."
    for name in sorted(names):
        r = names[name]
        for ip in r.get("a", []):
            yield f"{name} {TTL} IN A {ip}"
        for p, w, port, t in r.get("srv", []):
            yield f"{name} {TTL} IN SRV {p} {w} {port} {t}"


def unbound_conf(names):
    lines = [
        "server:",
        "    interface: 127.0.0.1",
        "    port: @PORT@",
        "    do-ip6: no",
        "    num-threads: 1",
        "    so-reuseport: no",
        "    username: \"\"",
        "    chroot: \"\"",
        "    directory: \"@DIR@\"",
        "    pidfile: \"@DIR@/unbound.pid\"",
        "    use-syslog: no",
        "    logfile: \"\"",
        "    verbosity: 0",
        "    module-config: \"iterator\"",
        "    access-control: 127.0.0.0/8 allow",
        f"    local-zone: \"{DOMAIN}.\" static",
    ]
    lines += [f"    local-data: \"{rr}\"" for rr in rrs(names)]
    lines += ["remote-control:", "    control-enable: no", ""]
    return "\n".join(lines)


def knot_zone(names):
    return "\n".join([f"$ORIGIN {DOMAIN}.", f"$TTL {TTL}", *rrs(names), ""])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--apps", type=int, default=300)
    ap.add_argument("--tasks", type=int, default=4, help="tasks per app")
    ap.add_argument("--queries", type=int, default=20000, help="lines per query file")
    ap.add_argument("--out", required=True, help="directory to write into")
    args = ap.parse_args()

    names, a_names, srv_names = build(args.apps, args.tasks)
    rnd = random.Random(42)
    q = args.queries
    n_a, n_srv = q * 70 // 100, q * 20 // 100
    n_nx = q - n_a - n_srv
    mixed = [f"{rnd.choice(a_names)} A" for _ in range(n_a)]
    mixed += [f"{rnd.choice(srv_names)} SRV" for _ in range(n_srv)]
    # Names that do not exist: unknown apps and tasks, in and below the Marathon subdomain.
    mixed += [
        f"nx{rnd.randrange(10**6)}{rnd.choice(['', '.marathon', '.marathon.slave'])}.{DOMAIN}. A"
        for _ in range(n_nx)
    ]
    rnd.shuffle(mixed)
    a_only = [f"{rnd.choice(a_names)} A" for _ in range(q)]

    os.makedirs(args.out, exist_ok=True)
    files = {
        "table.json": json.dumps(table_json(names), indent=1) + "\n",
        "unbound.conf": unbound_conf(names),
        "mesos.zone": knot_zone(names),
        "queries.txt": "\n".join(mixed) + "\n",
        "queries-a.txt": "\n".join(a_only) + "\n",
    }
    for f, text in files.items():
        with open(os.path.join(args.out, f), "w") as fh:
            fh.write(text)
    records = sum(len(r.get("a", [])) + len(r.get("srv", [])) for r in names.values())
    print(f"zone: {args.apps} apps x {args.tasks} tasks, {len(names)} names, {records} records; "
          f"queries: {n_a} A / {n_srv} SRV / {n_nx} NXDOMAIN")


if __name__ == "__main__":
    main()
