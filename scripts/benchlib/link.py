"""`scripts/bench link [--scale S] [--noise-mb M] [--rate-mb R] [--rtt-ms T] [--rounds R] [--encrypt]`

backup-fetch through a link that behaves like the internet: a proxy capping every
connection at R MB/s, adding T ms before each request and each new connection, with
small socket buffers (a connection not read stalls). walfetch restoring its own and
walrus's lz4 backups, walrus, pgBackRest (--process-max 8); throughput of compressed
bytes against the ideal (walfetch's connections x R, bounded by walfetch's rate
without the proxy), peak RSS, connections opened. --encrypt: walfetch's and
walrus's backups (and WAL) written and read with a libsodium key.
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .harness import (
    clean_up,
    IS_ROOT,
    LIBSODIUM,
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


def main(args):
    """backup-fetch through a link that behaves like the internet (see LatencyProxy)."""
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    crypt = LIBSODIUM if args.encrypt else {}
    work = Path(tempfile.mkdtemp(prefix="walfetch-bench-"))
    os.chmod(work, 0o755)
    s3 = link = tls = None
    rate = args.rate_mb * 1e6
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
        if args.noise_mb:
            rows = args.noise_mb * 1024 * 1024 // 140
            primary.sql(f"CREATE TABLE noise AS SELECT g, md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) AS t FROM generate_series(1, {rows}) g")
            primary.sql("CHECKPOINT")
        size_mb = int(primary.sql("SELECT sum(pg_database_size(datname)) FROM pg_database")) / 1e6
        s3 = S3(work / "s3")
        link = LatencyProxy(s3.port, args.rtt_ms / 1000, rate=rate, bufsize=65536)
        tls = TlsFront(work, link.port)
        pgbr = PgBackRest(work, "s3", primary, TlsFront(work, s3.port).port)
        pgbr_link = PgBackRest(work, "s3-link", primary, tls.port)
        pgbr.run("stanza-create")
        pgbr.run("backup", "--type=full")
        archives = {}
        wal.mark()
        envs = []
        for name, binary in [("walfetch", walfetch), ("walrus", walrus)]:
            env = dict(os.environ, **s3.env(), **crypt, WALG_S3_PREFIX=f"s3://bench/{name}", WALG_COMPRESSION_METHOD="lz4",
                       PGHOST=str(primary.sock), PGPORT=str(primary.port), PGUSER="postgres", WALFETCH_LOG_LEVEL="warn",
                       WALG_LOG_LEVEL="ERROR")
            run(as_pg([binary, "backup-push", primary.data]), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            archives[name] = work / "s3" / "bench" / name
            envs.append(env)
        wal.publish(walfetch, envs)
        primary.stop()

        def compressed(root):
            return sum(f.stat().st_size for f in (root / "basebackups_005").rglob("*.lz4") if f.is_file())

        def partitions(root):
            return len([f for f in (root / "basebackups_005").rglob("*.lz4") if f.is_file()])

        pgbr_bytes = sum(f.stat().st_size for f in (work / "s3" / "bench" / "pgbackrest" / "backup").rglob("*") if f.is_file())
        base_env = dict(os.environ, **crypt, WALFETCH_LOG_LEVEL="warn", WALG_LOG_LEVEL="ERROR", RUST_LOG="error")

        def s3_env(name, port):
            env = dict(base_env, **s3.env(), WALG_S3_PREFIX=f"s3://bench/{name}")
            env["AWS_ENDPOINT_URL"] = env["AWS_ENDPOINT"] = f"http://127.0.0.1:{port}"
            return env

        def pgbackrest_restore(target, br):
            target.mkdir()
            if IS_ROOT:
                run(["chown", "postgres:", str(target)])
            return as_pg(["pgbackrest", f"--config={br.conf}", "--stanza=bench", f"--pg1-path={target}",
                          f"--process-max={args.pgbackrest_processes}", "restore"])

        cases = [
            ("direct: walfetch restores walfetch's backup", lambda t: [walfetch, "backup-fetch", t, "LATEST", "--no-sync"],
             s3_env("walfetch", s3.port), compressed(archives["walfetch"])),
            ("link: walfetch restores walfetch's backup", lambda t: [walfetch, "backup-fetch", t, "LATEST", "--no-sync"],
             s3_env("walfetch", link.port), compressed(archives["walfetch"])),
            ("link: walfetch restores walrus's backup", lambda t: [walfetch, "backup-fetch", t, "LATEST", "--no-sync"],
             s3_env("walrus", link.port), compressed(archives["walrus"])),
            ("link: walrus restores walrus's backup", lambda t: [walrus, "backup-fetch", t, "LATEST"],
             s3_env("walrus", link.port), compressed(archives["walrus"])),
            ("link: walrus restores walfetch's backup", lambda t: [walrus, "backup-fetch", t, "LATEST"],
             s3_env("walfetch", link.port), compressed(archives["walfetch"])),
            (f"link: pgbackrest restore --process-max={args.pgbackrest_processes} (ends durable)",
             lambda t: pgbackrest_restore(t, pgbr_link), base_env, pgbr_bytes),
        ]
        for variant in args.variant or []:
            key, _, value = variant.partition("=")
            cases.append((f"link: walfetch restores walfetch's backup, {key}={value}",
                          lambda t: [walfetch, "backup-fetch", t, "LATEST", "--no-sync"],
                          dict(s3_env("walfetch", link.port), **{key: value}), compressed(archives["walfetch"])))
        if args.only:
            cases = [c for c in cases if re.search(args.only, c[0]) or c[0].startswith("direct")]
        results = {name: {"times": [], "rss": 0} for name, *_ in cases}
        target = work / "restored"
        for r in range(args.rounds):
            for name, cmd, env, _ in cases:
                settle(target, [])
                before = link.connections
                t, peak, _ = timed([str(a) for a in cmd(target)], env)
                results[name]["times"].append(t)
                results[name]["rss"] = max(results[name]["rss"], peak)
                results[name]["connections"] = link.connections - before
            print(f"bench: link: round {r + 1} of {args.rounds} done", file=sys.stderr)
        direct = "direct: walfetch restores walfetch's backup"
        direct_rate = compressed(archives["walfetch"]) / 1e6 / statistics.median(results[direct]["times"])
        ideal = min(args.transfers * args.rate_mb, direct_rate)
        print(f"\nbackup-fetch through a link of {args.rate_mb:g} MB/s per connection, {args.rtt_ms} ms per request, "
              f"64 KiB proxy buffers; {size_mb:.0f} MB of databases; lz4{' + libsodium (walfetch, walrus)' if crypt else ''}; "
              f"median of {args.rounds} rounds\n")
        print(f"walfetch's backup: {compressed(archives['walfetch']) / 1e6:.0f} MB in {partitions(archives['walfetch'])} partitions; "
              f"walrus's: {compressed(archives['walrus']) / 1e6:.0f} MB in {partitions(archives['walrus'])}; "
              f"pgBackRest's: {pgbr_bytes / 1e6:.0f} MB.")
        print(f"Ideal: {args.transfers} connections x {args.rate_mb:g} MB/s = {args.transfers * args.rate_mb:g} MB/s, "
              f"bounded by walfetch's direct rate {direct_rate:.0f} MB/s: {ideal:.0f} MB/s.\n")
        print("| case | seconds | MB/s (compressed) | of ideal | peak RSS (MiB) | connections |")
        print("|---|---|---|---|---|---|")
        for name, _, _, size in cases:
            t = statistics.median(results[name]["times"])
            mbs = size / 1e6 / t
            print(f"| {name} | {t:.2f} | {mbs:.1f} | {mbs / ideal:.2f} | {results[name]['rss'] / 1024:.1f} | "
                  f"{results[name].get('connections', '-') if name.startswith('link') else '-'} |")
        own = statistics.median(results["link: walfetch restores walfetch's backup"]["times"]) if "link: walfetch restores walfetch's backup" in results else None
        theirs = statistics.median(results["link: walrus restores walrus's backup"]["times"]) if "link: walrus restores walrus's backup" in results else None
        if own and theirs:
            print(f"\nwalfetch / walrus throughput, each restoring its own backup: "
                  f"{(compressed(archives['walfetch']) / own) / (compressed(archives['walrus']) / theirs):.2f}x")
    finally:
        subprocess.run(["pkill", "-f", f"socat.*{work}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        clean_up(work, (tls, link, s3))


NAME = "link"
HELP = "backup-fetch through a capped, distant link against the ideal and the peers"


def add_arguments(p):
    p.add_argument("--scale", type=int, default=70)
    p.add_argument("--noise-mb", type=int, default=300)
    p.add_argument("--rate-mb", type=float, default=12, help="each connection's rate, MB/s")
    p.add_argument("--rtt-ms", type=int, default=40, help="delay before each request and each new connection")
    p.add_argument("--transfers", type=int, default=10, help="walfetch's default connections, for the ideal")
    p.add_argument("--pgbackrest-processes", type=int, default=8)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--only", help="run only the link cases whose name matches this regular expression")
    p.add_argument("--variant", action="append", metavar="KEY=VALUE",
                   help="also run walfetch on its own backup with this setting (repeatable), e.g. WALFETCH_RANGE_SIZE=1048576")
    p.add_argument("--encrypt", action="store_true", help="walfetch's and walrus's backups encrypted with libsodium (pgBackRest's stay plain)")
