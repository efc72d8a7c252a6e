"""`scripts/bench pgbackrest [--scale S] [--noise-mb M] [--rate-mb R] [--rtt-ms T] [--rounds R] [--only REGEX]`

restore of one pgBackRest repository (lz4, bundles) written by the current pgBackRest
(WALFETCH_BENCH_PGBACKREST names a build of it; else Debian's 2.45): walfetch
backup-fetch against `pgbackrest restore --process-max=2` (the current release and
Debian's 2.45 side by side), from the directory, from the S3 server through TLS,
and through a capped link (R MB/s per connection, T ms per request, TLS) where
pgBackRest also runs with --process-max=8; time, peak RSS, ratios, and walfetch's
share of the ideal on the link.
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
    LatencyProxy,
    Pg,
    PgBackRest,
    ROOT,
    S3,
    TlsFront,
    as_pg,
    pg_bin,
    run,
    settle,
    timed,
)


def main(args):
    """walfetch against pgBackRest, restoring the same pgBackRest repository (see the usage)."""
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    current = os.environ.get("WALFETCH_BENCH_PGBACKREST")
    debian = shutil.which("pgbackrest")
    if not (current or debian):
        sys.exit("bench: no pgbackrest (scripts/install-deps --bench; WALFETCH_BENCH_PGBACKREST names a build of the current release)")
    writer = current or debian
    version = lambda b: subprocess.run([b, "version"], capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="walfetch-bench-"))
    os.chmod(work, 0o755)
    s3 = tls = link = link_tls = None
    rate = args.rate_mb * 1e6
    try:
        walfetch = work / "walfetch"
        shutil.copy(ROOT / "target/release/walfetch", walfetch)
        if IS_ROOT:
            run(["chown", "-R", "postgres:", str(work)])
        primary = Pg(work, "primary")
        run(as_pg([pg_bin() / "initdb", "-D", primary.data, "-A", "trust", "-U", "postgres", "--no-sync"]), stdout=subprocess.DEVNULL)
        primary.conf("fsync=off\nmax_wal_size='8GB'\n")
        s3 = S3(work / "s3")
        tls = TlsFront(work, s3.port)
        link = LatencyProxy(s3.port, args.rtt_ms / 1000, rate=rate, bufsize=65536)
        link_tls = TlsFront(work, link.port)
        posix = PgBackRest(work, "posix", primary, binary=writer, bundle=True)
        remote = PgBackRest(work, "s3", primary, tls.port, binary=writer, bundle=True)
        linked = PgBackRest(work, "s3-link", primary, link_tls.port, binary=writer, bundle=True)
        primary.conf(f"archive_mode=on\narchive_command='{posix.command('archive-push', '%p')}'\n")
        primary.start()
        run(as_pg(["pgbench", "-i", "-q", "-s", str(args.scale), "-h", primary.sock, "-p", str(primary.port), "-U", "postgres", "postgres"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if args.noise_mb:
            rows = args.noise_mb * 1024 * 1024 // 140
            primary.sql(f"CREATE TABLE noise AS SELECT g, md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) AS t FROM generate_series(1, {rows}) g")
            primary.sql("CHECKPOINT")
        size_mb = int(primary.sql("SELECT sum(pg_database_size(datname)) FROM pg_database")) / 1e6
        for repo in (posix, remote):
            repo.run("stanza-create")
            repo.run("backup", "--type=full")
        primary.stop()
        # The primary archives into the directory repository; the S3 one gets the same WAL.
        shutil.copytree(work / "pgbackrest-posix" / "repo" / "archive" / "bench" / "15-1",
                        work / "s3" / "bench" / "pgbackrest" / "archive" / "bench" / "15-1", dirs_exist_ok=True)
        if IS_ROOT:
            run(["chown", "-R", "postgres:", str(work / "s3")])
        repo_bytes = sum(f.stat().st_size for f in (work / "s3" / "bench" / "pgbackrest" / "backup").rglob("*") if f.is_file())
        base_env = dict(os.environ, WALFETCH_LOG_LEVEL="warn", RUST_LOG="error")

        def walfetch_env(conf, endpoint_port=None):
            env = dict(base_env, PGBACKREST_CONFIG=str(conf))
            if endpoint_port:
                env["WALG_S3_CA_CERT_FILE"] = str(tls.ca)
            return env

        def walfetch_restore(target):
            return [walfetch, "backup-fetch", target, "LATEST"]

        def pgbackrest_restore(repo, binary, processes):
            def cmd(target):
                target.mkdir()
                if IS_ROOT:
                    run(["chown", "postgres:", str(target)])
                return as_pg([binary, f"--config={repo.conf}", "--stanza=bench", f"--pg1-path={target}",
                              f"--process-max={processes}", "restore"])
            return cmd

        binaries = [("current", current), ("Debian", debian)]
        binaries = [(n, b) for n, b in binaries if b]
        cases = []
        for source, repo, inputs in [("directory", posix, [work / "pgbackrest-posix" / "repo"]),
                                     ("S3", remote, [work / "s3" / "bench" / "pgbackrest"]),
                                     ("link", linked, [])]:
            cases.append((f"{source}: walfetch backup-fetch (synced)", walfetch_restore, walfetch_env(repo.conf, True), inputs))
            for name, binary in binaries:
                for processes in ([2, 8] if source == "link" else [2]):
                    cases.append((f"{source}: pgbackrest {version(binary).split()[-1]} restore --process-max={processes}",
                                  pgbackrest_restore(repo, binary, processes), base_env, inputs))
        # The disk's floor for a durable restore of these bytes: a plain copy, then sync.
        cases.append(("floor: cp -r of the data directory, then sync",
                      lambda t: ["bash", "-c", f"cp -r {primary.data} {t} && sync"], base_env, [primary.data]))
        if args.only:
            cases = [c for c in cases if re.search(args.only, c[0])]
        results = {name: {"times": [], "rss": 0} for name, *_ in cases}
        target = work / "restored"
        for r in range(args.rounds):
            for name, cmd, env, inputs in cases:
                settle(target, inputs)
                t, peak, _ = timed([str(a) for a in cmd(target)], env)
                results[name]["times"].append(t)
                results[name]["rss"] = max(results[name]["rss"], peak)
            print(f"bench: pgbackrest: round {r + 1} of {args.rounds} done", file=sys.stderr)
        median = {n: statistics.median(v["times"]) for n, v in results.items()}
        print(f"\nrestore of one pgBackRest repository ({version(writer)} wrote it: lz4, bundles; {size_mb:.0f} MB of databases, "
              f"{repo_bytes / 1e6:.0f} MB in the repository), median of {args.rounds} rounds; the link: {args.rate_mb:g} MB/s per "
              f"connection, {args.rtt_ms} ms per request, TLS\n")
        print("| case | seconds | MB/s (stored) | peak RSS (MiB) |")
        print("|---|---|---|---|")
        for name, *_ in cases:
            print(f"| {name} | {median[name]:.2f} | {repo_bytes / 1e6 / median[name]:.1f} | {results[name]['rss'] / 1024:.1f} |")
        print("\nRatios (walfetch's time / pgBackRest's, both ending durable):\n")
        for name in median:
            if "pgbackrest" in name:
                source = name.split(":")[0]
                own = median.get(f"{source}: walfetch backup-fetch (synced)")
                if own:
                    print(f"- {name}: {own / median[name]:.2f}")
        direct = median.get("S3: walfetch backup-fetch (synced)")
        linked_t = median.get("link: walfetch backup-fetch (synced)")
        if direct and linked_t:
            ideal = min(10 * args.rate_mb, repo_bytes / 1e6 / direct)
            print(f"\nthrough the link: walfetch {repo_bytes / 1e6 / linked_t:.1f} MB/s of an ideal {ideal:.0f} MB/s "
                  f"(10 connections x {args.rate_mb:g} MB/s, bounded by its direct rate): {repo_bytes / 1e6 / linked_t / ideal:.2f}")
    finally:
        clean_up(work, (link_tls, link, tls, s3))


NAME = "pgbackrest"
HELP = "restore of a pgBackRest repository against pgBackRest itself"


def add_arguments(p):
    p.add_argument("--scale", type=int, default=60)
    p.add_argument("--noise-mb", type=int, default=0)
    p.add_argument("--rate-mb", type=float, default=12)
    p.add_argument("--rtt-ms", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only")
