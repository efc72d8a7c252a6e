"""`scripts/bench wal-push [--segments N] [--rounds R]`

archive_command throughput: the same real WAL segments pushed one process per
segment (as PostgreSQL does) by walfetch and walrus, to a directory and to the
local S3 server; segments/s, MB/s, peak RSS per call, and the ratio to walrus.
"""
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from .harness import (
    IS_ROOT,
    ROOT,
    S3,
    as_pg,
    free_port,
    pg_bin,
    run,
    timed,
    tool,
)


def make_wal(work, count):
    """Real WAL: pgbench data loaded into a fresh cluster; returns the full segments."""
    data = work / "pg"
    sock = work / "sock"
    sock.mkdir()
    if IS_ROOT:
        run(["chown", "-R", "postgres:", str(work)])
    run(as_pg([pg_bin() / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"]), stdout=subprocess.DEVNULL)
    port = free_port()
    with open(data / "postgresql.conf", "a") as f:
        f.write(f"port={port}\nunix_socket_directories='{sock}'\nlisten_addresses=''\nmax_wal_size='8GB'\nmin_wal_size='4GB'\nfsync=off\n")
    run(as_pg([pg_bin() / "pg_ctl", "-D", data, "-l", work / "pg.log", "-w", "start"]), stdout=subprocess.DEVNULL)
    try:
        env = dict(os.environ, PGHOST=str(sock), PGPORT=str(port), PGUSER="postgres")
        scale = max(1, count // 1 + 2)
        run(["pgbench", "-i", "-q", "-s", str(scale), "postgres"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run(["psql", "-X", "-q", "-c", "SELECT pg_switch_wal()", "postgres"], env=env, stdout=subprocess.DEVNULL)
    finally:
        run(as_pg([pg_bin() / "pg_ctl", "-D", data, "-m", "fast", "stop"]), stdout=subprocess.DEVNULL)
    segs = sorted(p for p in (data / "pg_wal").iterdir() if len(p.name) == 24)[:count]
    out = work / "segments"
    out.mkdir()
    for s in segs:
        shutil.copy(s, out / s.name)
    return sorted(out.iterdir())


def main(args):
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    work = Path(tempfile.mkdtemp(prefix="walfetch-bench-"))
    os.chmod(work, 0o755)
    s3 = None
    try:
        segs = make_wal(work, args.segments)
        mb = sum(s.stat().st_size for s in segs) / 1e6
        s3 = S3(work / "s3")
        tools = {"walfetch": ROOT / "target/release/walfetch", "walrus": tool("walrus")}
        rows = []
        for store in ["file", "s3"]:
            results = {}
            for name, binary in tools.items():
                times, rss = [], 0
                for r in range(args.rounds):
                    env = dict(os.environ, WALG_COMPRESSION_METHOD="lz4", WALFETCH_LOG_LEVEL="warn", WALG_LOG_LEVEL="ERROR", RUST_LOG="error")
                    if store == "file":
                        dest = work / f"archive-{name}-{r}"
                        # An archive directory must exist (walfetch refuses a missing root).
                        dest.mkdir()
                        env["WALG_FILE_PREFIX"] = str(dest)
                    else:
                        env.update(s3.env())
                        env["WALG_S3_PREFIX"] = f"s3://bench/{name}-{r}"
                    start = time.perf_counter()
                    for seg in segs:
                        _, peak, _ = timed([str(binary), "wal-push", str(seg)], env)
                        rss = max(rss, peak)
                    times.append(time.perf_counter() - start)
                results[name] = (statistics.median(times), rss)
            base = results["walrus"][0]
            for name, (t, rss) in results.items():
                rows.append((store, name, len(segs) / t, mb / t, rss / 1024, t / base))
        print(f"\nwal-push, lz4, {len(segs)} real segments ({mb:.0f} MB), one process per segment, median of {args.rounds} rounds\n")
        print("| storage | tool | segments/s | MB/s | peak RSS per call (MiB) | time vs walrus |")
        print("|---|---|---|---|---|---|")
        for store, name, sps, mbs, rss, ratio in rows:
            print(f"| {store} | {name} | {sps:.1f} | {mbs:.0f} | {rss:.1f} | {ratio:.2f}x |")
    finally:
        if s3:
            s3.stop()
        shutil.rmtree(work, ignore_errors=True)


NAME = "wal-push"
HELP = "archive_command throughput"


def add_arguments(p):
    p.add_argument("--segments", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
