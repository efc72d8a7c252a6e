"""`scripts/bench delta [--scale S] [--transactions N] [--rounds R]`

backup-fetch of walrus's 3-deep delta chain (a full backup and two deltas, N pgbench
transactions apart) and of its full backup, by walfetch and walrus, from the local
S3 server directly and through the capped link; time and peak RSS.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import (
    IS_ROOT,
    LatencyProxy,
    Pg,
    ROOT,
    S3,
    as_pg,
    pg_bin,
    run,
    settle,
    timed,
    tool,
)


def main(args):
    """backup-fetch of a 3-deep delta chain (walrus's), against walrus, direct and through the capped link."""
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    work = Path(tempfile.mkdtemp(prefix="walfetch-bench-"))
    os.chmod(work, 0o755)
    s3 = link = None
    primary = None
    try:
        walfetch = work / "walfetch"
        shutil.copy(ROOT / "target/release/walfetch", walfetch)
        walrus = work / "walrus"
        shutil.copy(tool("walrus"), walrus)
        if IS_ROOT:
            run(["chown", "-R", "postgres:", str(work)])
        s3 = S3(work / "s3")
        link = LatencyProxy(s3.port, args.rtt_ms / 1000, rate=args.rate_mb * 1e6, bufsize=65536)
        env = dict(os.environ, **s3.env(), WALG_S3_PREFIX="s3://bench/delta", WALG_COMPRESSION_METHOD="lz4",
                   WALFETCH_LOG_LEVEL="warn", WALG_LOG_LEVEL="ERROR")
        primary = Pg(work, "primary")
        run(as_pg([pg_bin() / "initdb", "-D", primary.data, "-A", "trust", "-U", "postgres", "--no-sync"]), stdout=subprocess.DEVNULL)
        primary.conf(f"fsync=off\nmax_wal_size='8GB'\narchive_mode=on\narchive_command='env WALG_S3_PREFIX=s3://bench/delta {walrus} wal-push %p'\n")
        primary.start(env=env)
        penv = dict(env, PGHOST=str(primary.sock), PGPORT=str(primary.port), PGUSER="postgres")
        pgbench = ["pgbench", "-h", primary.sock, "-p", str(primary.port), "-U", "postgres", "postgres"]
        run(as_pg(pgbench[:1] + ["-i", "-q", "-s", str(args.scale)] + pgbench[1:]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run(as_pg([walrus, "backup-push", primary.data]), env=penv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for step in range(2):
            run(as_pg(pgbench[:1] + ["-n", "-t", str(args.transactions), "-c", "2"] + pgbench[1:]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            primary.sql("CHECKPOINT")
            # walrus builds a delta from the WAL archived since its parent: let the
            # archive catch up first.
            last = primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
            primary.sql("SELECT pg_switch_wal()")
            for _ in range(600):
                done = primary.sql("SELECT last_archived_wal FROM pg_stat_archiver") or ""
                if done >= last:
                    break
                time.sleep(0.1)
            out = subprocess.run(as_pg([walrus, "backup-push", primary.data]), env=dict(penv, WALG_DELTA_MAX_STEPS="3"),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if out.returncode != 0:
                sys.exit(f"bench: walrus delta backup-push failed: {out.stderr[-2000:]}")
        primary.sql("SELECT pg_switch_wal()")
        time.sleep(2)
        primary.stop()
        root = work / "s3" / "bench" / "delta" / "basebackups_005"
        names = sorted(f.name[:-len("_backup_stop_sentinel.json")] for f in root.glob("*_backup_stop_sentinel.json"))
        sizes = {n: sum(f.stat().st_size for f in (root / n).rglob("*") if f.is_file()) for n in names}
        full, newest = names[0], names[-1]
        cases = []
        for where, port in [("direct", s3.port), ("link", link.port)]:
            renv = dict(env)
            renv["AWS_ENDPOINT_URL"] = renv["AWS_ENDPOINT"] = f"http://127.0.0.1:{port}"
            for label, name in [("full backup", full), ("3-deep delta chain", newest)]:
                cases.append((f"{where}: walfetch restores the {label}", [walfetch, "backup-fetch", "T", name, "--no-sync"], renv))
                cases.append((f"{where}: walrus restores the {label}", [walrus, "backup-fetch", "T", name], renv))
        results = {c[0]: {"times": [], "rss": 0} for c in cases}
        target = work / "restored"
        for r in range(args.rounds):
            for name, cmd, renv in cases:
                settle(target, [])
                t, peak, _ = timed([str(target) if c == "T" else str(c) for c in cmd], renv)
                results[name]["times"].append(t)
                results[name]["rss"] = max(results[name]["rss"], peak)
            print(f"bench: delta: round {r + 1} of {args.rounds} done", file=sys.stderr)
        print(f"\nbackup-fetch of walrus's backups of pgbench scale {args.scale}: a full backup "
              f"({sizes[full] / 1e6:.0f} MB) and two deltas after {args.transactions} transactions each "
              f"({', '.join(f'{sizes[n] / 1e6:.0f} MB' for n in names[1:])}); lz4; the link caps each connection at "
              f"{args.rate_mb:g} MB/s with {args.rtt_ms} ms per request; median of {args.rounds} rounds\n")
        print("| case | seconds | peak RSS (MiB) |")
        print("|---|---|---|")
        for name, _, _ in cases:
            print(f"| {name} | {statistics.median(results[name]['times']):.2f} | {results[name]['rss'] / 1024:.1f} |")
    finally:
        if primary:
            subprocess.run(as_pg([pg_bin() / "pg_ctl", "-D", primary.data, "-m", "immediate", "stop"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for server in (link, s3):
            if server:
                server.stop()
        shutil.rmtree(work, ignore_errors=True)


NAME = "delta"
HELP = "restore of a 3-deep delta chain against walrus"


def add_arguments(p):
    p.add_argument("--scale", type=int, default=50)
    p.add_argument("--transactions", type=int, default=3000, help="pgbench transactions between backups (at 20000, walrus 0.4.1 fails to write the delta: \"part consumer dropped\")")
    p.add_argument("--rate-mb", type=float, default=12)
    p.add_argument("--rtt-ms", type=int, default=40)
    p.add_argument("--rounds", type=int, default=1)
