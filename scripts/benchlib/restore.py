"""`scripts/bench restore [--scale S] [--noise-mb M] [--rounds R] [--only REGEX] [--variant KEY=VALUE]`

backup-fetch: a primary with pgbench data (scale S), then again with M MB of
less compressible rows added, backed up by walfetch (lz4), walrus (lz4, zstd)
and pgBackRest (lz4, restored with --process-max=2);
each restored from the directory, from the S3 server, and from the S3 server
behind a proxy adding 50 ms to every request; without and with the final sync;
against the floors (cp -r of the data directory; every partition through
lz4 -dc | tar -x in parallel). Time, peak RSS, the tool's CPU and the S3
server's CPU; before every run the page cache is dropped (as root) and the
run's inputs are read back in, and rounds go case by case.
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import (
    clean_up,
    IS_ROOT,
    LatencyProxy,
    Pg,
    PgBackRest,
    ROOT,
    S3,
    TlsFront,
    WalArchive,
    as_pg,
    pg_bin,
    run,
    settle,
    timed,
    tool,
)


def cpu_of(pid):
    """CPU seconds process pid has used so far (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(args):
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    work = Path(tempfile.mkdtemp(prefix="walfetch-bench-"))
    os.chmod(work, 0o755)
    s3 = proxy = tls = slow_tls = None
    try:
        walfetch = work / "walfetch"
        shutil.copy(ROOT / "target/release/walfetch", walfetch)
        walrus = work / "walrus"
        shutil.copy(tool("walrus"), walrus)
        if IS_ROOT:
            run(["chown", "-R", "postgres:", str(work)])
        primary = Pg(work, "primary")
        run(as_pg([pg_bin() / "initdb", "-D", primary.data, "-A", "trust", "-U", "postgres", "--no-sync"]), stdout=subprocess.DEVNULL)
        primary.conf("fsync=off\nmax_wal_size='8GB'\n")
        wal = WalArchive(work, primary)
        primary.start()
        run(as_pg(["pgbench", "-i", "-q", "-s", str(args.scale), "-h", primary.sock, "-p", str(primary.port), "-U", "postgres", "postgres"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        s3 = S3(work / "s3")
        proxy = LatencyProxy(s3.port, 0.05)
        tls, slow_tls = TlsFront(work, s3.port), TlsFront(work, proxy.port)
        pgbr = {"directory": PgBackRest(work, "posix", primary), "S3": PgBackRest(work, "s3", primary, tls.port),
                "S3 + 50 ms": PgBackRest(work, "s3-slow", primary, slow_tls.port)}
        pgbr["directory"].run("stanza-create")
        pgbr["S3"].run("stanza-create")
        datasets = [("pgbench", None), ("pgbench + random text", args.noise_mb)]
        for index, (label, noise) in enumerate(datasets):
            if noise:
                rows = noise * 1024 * 1024 // 140
                primary.sql(f"CREATE TABLE noise AS SELECT g, md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) AS t FROM generate_series(1, {rows}) g")
                primary.sql("CHECKPOINT")
            size_mb = int(primary.sql("SELECT sum(pg_database_size(datname)) FROM pg_database")) / 1e6
            # Backups are pushed through the S3 server, as a provider's would be: s3s-fs then
            # keeps each object's ETag and serves GETs without hashing the whole object first
            # (which it does for files placed in its directory, and real S3 never does). The
            # directory runs read the same files where s3s-fs stores them.
            archives = {}
            wal.mark()
            envs = []
            for name, binary, codec in [("walfetch lz4", walfetch, "lz4"), ("walrus lz4", walrus, "lz4"), ("walrus zstd", walrus, "zstd")]:
                rel = f"d{index}-{name.replace(' ', '-')}"
                env = dict(os.environ, **s3.env(), WALG_S3_PREFIX=f"s3://bench/{rel}", WALG_COMPRESSION_METHOD=codec,
                           PGHOST=str(primary.sock), PGPORT=str(primary.port), PGUSER="postgres", WALFETCH_LOG_LEVEL="warn",
                           WALG_LOG_LEVEL="ERROR")
                run(as_pg([binary, "backup-push", primary.data]), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                archives[name] = work / "s3" / "bench" / rel
                envs.append(dict(env, WALG_COMPRESSION_METHOD="lz4"))
            wal.publish(walfetch, envs)
            # pgBackRest's own backups (lz4), one in each repository.
            if not args.only or re.search(args.only, "pgbackrest"):
                pgbr["directory"].run("backup", "--type=full")
                pgbr["S3"].run("backup", "--type=full")
            pgbr_inputs = {"directory": [work / "pgbackrest-posix" / "repo"], "S3": [work / "s3" / "bench" / "pgbackrest"]}
            pgbr_inputs["S3 + 50 ms"] = pgbr_inputs["S3"]

            # Every case runs once per round, rounds one after another, so a drift of the
            # machine over the run falls on every case alike.
            cases = []

            def case(name, cmd, env, inputs, sync_after=False):
                if args.only and not re.search(args.only, name):
                    return
                cases.append({"name": name, "cmd": cmd, "env": env, "inputs": inputs, "sync_after": sync_after, "times": [], "rss": 0,
                              "cpu": [], "server": []})

            base_env = dict(os.environ, WALFETCH_LOG_LEVEL="warn", WALG_LOG_LEVEL="ERROR", RUST_LOG="error")
            for source in ["directory", "S3", "S3 + 50 ms"]:
                for name, root in archives.items():
                    env = dict(base_env)
                    if source == "directory":
                        env["WALG_FILE_PREFIX"] = str(root)
                    else:
                        env.update(s3.env())
                        port = s3.port if source == "S3" else proxy.port
                        env["AWS_ENDPOINT_URL"] = env["AWS_ENDPOINT"] = f"http://127.0.0.1:{port}"
                        env["WALG_S3_PREFIX"] = f"s3://bench/{root.name}"
                    # Both tools restore every backup (their own and the other's), so the
                    # comparison is on the same input too.
                    inputs = [root, walfetch, walrus]
                    case(f"{source}: walfetch restores {name}, no sync", lambda t: [walfetch, "backup-fetch", t, "LATEST", "--no-sync"], env, inputs)
                    case(f"{source}: walfetch restores {name}, synced", lambda t: [walfetch, "backup-fetch", t, "LATEST"], env, inputs)
                    for variant in args.variant or []:
                        key, _, value = variant.partition("=")
                        case(f"{source}: walfetch [{variant}] restores {name}, no sync", lambda t: [walfetch, "backup-fetch", t, "LATEST", "--no-sync"],
                             dict(env, **{key: value}), inputs)
                    case(f"{source}: walrus restores {name}, no sync", lambda t: [walrus, "backup-fetch", t, "LATEST"], env, inputs)
                    case(f"{source}: walrus restores {name}, + sync", lambda t: [walrus, "backup-fetch", t, "LATEST"], env, inputs, True)

                def pgbackrest_restore(target, br=pgbr[source]):
                    target.mkdir()
                    if IS_ROOT:
                        run(["chown", "postgres:", str(target)])
                    return as_pg(["pgbackrest", f"--config={br.conf}", "--stanza=bench", f"--pg1-path={target}",
                                  "--process-max=2", "restore"])
                case(f"{source}: pgbackrest restore --process-max=2 (lz4; ends durable)", pgbackrest_restore, base_env, pgbr_inputs[source])
            case("floor: cp -r of the data directory", lambda t: ["cp", "-r", primary.data, t], base_env, [primary.data])
            parts = sorted((archives["walfetch lz4"] / "basebackups_005").glob("*/tar_partitions/*.lz4"))
            # A partition may hold files whose directory another partition holds, and a tar
            # running in parallel does not wait for it: the directories are made first.
            dirs = set()
            for part in parts:
                listing = subprocess.run(["bash", "-c", f"lz4 -dc {part} | tar -t"], capture_output=True, text=True, check=True).stdout
                for member in listing.splitlines():
                    parent = member.rstrip("/") if member.endswith("/") else os.path.dirname(member)
                    if parent.strip("/"):
                        dirs.add(parent.strip("/"))
            script = f"mkdir -p {' '.join(f'{{t}}/{d}' for d in sorted(dirs))} || exit 1; " + \
                "".join(f"(lz4 -dc {p} | tar -x -C {{t}}) & pids=\"$pids $!\"; " for p in parts) + \
                "for p in $pids; do wait $p || exit 1; done"
            case("floor: lz4 -dc | tar -x, all partitions in parallel", lambda t: ["bash", "-c", f"mkdir -p {t} && " + script.format(t=t)],
                 base_env, [archives["walfetch lz4"]])

            target = work / "restored"
            for r in range(args.rounds):
                for c in cases:
                    settle(target, c["inputs"])
                    server_before = cpu_of(s3.proc.pid)
                    t, peak, cpu = timed([str(a) for a in c["cmd"](target)], c["env"])
                    c["cpu"].append(cpu)
                    c["server"].append(cpu_of(s3.proc.pid) - server_before)
                    if c["sync_after"]:
                        t0 = time.perf_counter()
                        subprocess.run(["sync"])
                        t += time.perf_counter() - t0
                    c["times"].append(t)
                    c["rss"] = max(c["rss"], peak)
                print(f"bench: {label}: round {r + 1} of {args.rounds} done", file=sys.stderr)
            if target.exists():
                shutil.rmtree(target)

            median = {c["name"]: statistics.median(c["times"]) for c in cases}
            print(f"\nbackup-fetch of {label} ({size_mb:.0f} MB of databases), median of {args.rounds} rounds\n")
            # CPU: the restoring process tree's user + system time (for pgBackRest, the
            # runuser wrapper's children are included by GNU time), and what the S3 server
            # process spent meanwhile. Both share the same 2 cores, so (tool + server) / 2
            # is the least wall time the run could take.
            print("| case | seconds | peak RSS (MiB) | tool CPU s | S3 server CPU s |")
            print("|---|---|---|---|---|")
            for c in cases:
                print(f"| {c['name']} | {median[c['name']]:.2f} | {c['rss'] / 1024:.1f} | "
                      f"{statistics.median(c['cpu']):.2f} | {statistics.median(c['server']):.2f} |")
            print("\nRatios (medians; each tool restoring its own lz4 backup):\n")
            print("| source | walfetch / walrus, no sync | walfetch / walrus, synced | walfetch synced / pgBackRest |")
            print("|---|---|---|---|")
            for source in ["directory", "S3", "S3 + 50 ms"]:
                def ratio(a, b):
                    a, b = median.get(f"{source}: {a}"), median.get(f"{source}: {b}")
                    return f"{a / b:.2f}" if a and b else "-"
                own = "walfetch restores walfetch lz4, "
                print(f"| {source} | {ratio(own + 'no sync', 'walrus restores walrus lz4, no sync')} | "
                      f"{ratio(own + 'synced', 'walrus restores walrus lz4, + sync')} | "
                      f"{ratio(own + 'synced', 'pgbackrest restore --process-max=2 (lz4; ends durable)')} |")
        primary.stop()
    finally:
        clean_up(work, (slow_tls, tls, proxy, s3))


NAME = "restore"
HELP = "backup-fetch speed and memory against the floors and the peers"


def add_arguments(p):
    p.add_argument("--scale", type=int, default=70)
    p.add_argument("--noise-mb", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", help="run only the cases whose name matches this regular expression (e.g. '^S3: walrus|^S3: walfetch')")
    p.add_argument("--variant", action="append", metavar="KEY=VALUE",
                   help="also run walfetch (no sync) with this setting (repeatable), e.g. WALFETCH_RANGE_SIZE=8388608")
