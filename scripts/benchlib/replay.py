"""`scripts/bench replay [--scale S] [--rounds R] [--writer walfetch|walrus] [--only REGEX]`

WAL replay: a primary writes about S x 14 MB of WAL (pgbench -i -s S), archived
with lz4 by walfetch (or by walrus, `--writer walrus`) and by pgBackRest; a standby restored from a base backup
replays all of it, timed from postgres start until it has replayed the last
archived LSN, with restore_command = mv (the floor) / cp of uncompressed segments,
walfetch, walrus wal-fetch at WALG_DOWNLOAD_CONCURRENCY 4 and 8, and pgBackRest
archive-get with archive-async (process-max 4), from the directory, from the S3
server, and from the S3 server behind a proxy adding 50 ms to every request.
Also the latency of one wal-fetch served from the prefetch spool (1000 calls).
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
    ACCESS,
    IS_ROOT,
    LatencyProxy,
    Pg,
    PgBackRest,
    ROOT,
    S3,
    SECRET,
    TlsFront,
    as_pg,
    pg_bin,
    run,
    tool,
)


def main(args):
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    work = Path(tempfile.mkdtemp(prefix="walfetch-bench-"))
    os.chmod(work, 0o755)
    s3 = tls = slow = slow_tls = None
    try:
        walfetch = work / "walfetch"
        shutil.copy(ROOT / "target/release/walfetch", walfetch)
        walrus = work / "walrus"
        shutil.copy(tool("walrus"), walrus)
        archive = work / "s3" / "bench" / "pg"
        raw = work / "raw"
        for d in (archive, raw):
            d.mkdir(parents=True)
        if IS_ROOT:
            run(["chown", "-R", "postgres:", str(work)])
        env = dict(os.environ, WALG_FILE_PREFIX=str(archive), WALFETCH_LOG_LEVEL="warn")

        print("bench: generating WAL", file=sys.stderr)
        s3 = S3(work / "s3")
        tls = TlsFront(work, s3.port)
        slow = LatencyProxy(s3.port, 0.05)
        slow_tls = TlsFront(work, slow.port)
        primary = Pg(work, "primary")
        run(as_pg([pg_bin() / "initdb", "-D", primary.data, "-A", "trust", "-U", "postgres", "--no-sync"]), stdout=subprocess.DEVNULL)
        brdir = PgBackRest(work, "posix", primary)
        brs3 = PgBackRest(work, "s3", primary, tls.port)
        brslow = PgBackRest(work, "s3-slow", primary, slow_tls.port)
        # The archive walfetch and walrus read: written by walfetch's wal-push, or by walrus's.
        writer = f"{walrus} wal-push %p" if args.writer == "walrus" else f"{walfetch} wal-push %p"
        push = f"cp %p {raw}/%f && {writer} && {brdir.command('archive-push %p')} && {brs3.command('archive-push %p')}"
        primary.conf(f"archive_mode=on\narchive_command='{push}'\nmax_wal_size='8GB'\nfsync=off\nfull_page_writes=on\n")
        primary.start(env)
        brdir.run("stanza-create")
        brs3.run("stanza-create")
        penv = dict(env, PGHOST=str(primary.sock), PGPORT=str(primary.port), PGUSER="postgres")
        run(as_pg([walfetch, "backup-push", primary.data]), env=penv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run(as_pg(["pgbench", "-i", "-q", "-s", str(args.scale), "-h", primary.sock, "-p", str(primary.port), "-U", "postgres", "postgres"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = primary.sql("SELECT pg_current_wal_lsn()")
        want = primary.sql(f"SELECT pg_walfile_name('{target}')")
        primary.sql("SELECT pg_switch_wal()")
        while (primary.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") or "") < want:
            time.sleep(0.2)
        primary.stop()
        segments = sorted(p.name for p in raw.iterdir())
        seg_count = len(segments)
        print(f"bench: {seg_count} segments to replay, target LSN {target}", file=sys.stderr)

        creds = f"AWS_ACCESS_KEY_ID={ACCESS} AWS_SECRET_ACCESS_KEY={SECRET} AWS_REGION=us-east-1"
        standby_data = work / "standby"
        brget = f"--pg1-path={standby_data} --archive-async --process-max=4 archive-get %f \"%p\""
        methods = {
            "mv (floor)": f"mv {work}/rawcopy/%f %p",
            "cp": f"cp {raw}/%f %p",
            "walfetch, directory": f"{walfetch} --prefix {archive} wal-fetch %f %p",
            "walrus (4), directory": f"env WALG_FILE_PREFIX={archive} WALG_DOWNLOAD_CONCURRENCY=4 {walrus} wal-fetch %f %p",
            "walrus (8), directory": f"env WALG_FILE_PREFIX={archive} WALG_DOWNLOAD_CONCURRENCY=8 {walrus} wal-fetch %f %p",
            "pgBackRest async (4), directory": brdir.command(brget),
            "pgBackRest archive-get (sync), directory": brdir.command(f"--pg1-path={standby_data} archive-get %f \"%p\""),
            "walfetch on pgBackRest's archive, directory": f"{walfetch} --pgbackrest-config {brdir.conf} wal-fetch %f %p",
        }
        for where, port, br in (("S3", s3.port, brs3), ("S3 + 50 ms", slow.port, brslow)):
            endpoint = f"http://127.0.0.1:{port}"
            methods[f"walfetch, {where}"] = f"env {creds} {walfetch} --prefix s3://bench/pg --endpoint {endpoint} --path-style wal-fetch %f %p"
            for n in (4, 8):
                methods[f"walrus ({n}), {where}"] = (f"env {creds} AWS_ENDPOINT_URL={endpoint} AWS_S3_FORCE_PATH_STYLE=true "
                                                     f"WALG_S3_PREFIX=s3://bench/pg WALG_DOWNLOAD_CONCURRENCY={n} {walrus} wal-fetch %f %p")
            methods[f"pgBackRest async (4), {where}"] = br.command(brget)
            methods[f"pgBackRest archive-get (sync), {where}"] = br.command(f"--pg1-path={standby_data} archive-get %f \"%p\"")
            methods[f"walfetch on pgBackRest's archive, {where}"] = f"{walfetch} --pgbackrest-config {br.conf} wal-fetch %f %p"
        if args.only:
            methods = {k: v for k, v in methods.items() if k.startswith("mv") or re.search(args.only, k)}
        results = {}
        for r in range(args.rounds):
            for name, command in methods.items():
                standby = Pg(work, "standby")
                if standby.data.exists():
                    shutil.rmtree(standby.data)
                run(as_pg([walfetch, "backup-fetch", standby.data, "LATEST", "--no-sync"]), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                shutil.rmtree(work / "pgbackrest-posix" / "spool" / "archive", ignore_errors=True)
                for br in ("s3", "s3-slow"):
                    shutil.rmtree(work / f"pgbackrest-{br}" / "spool" / "archive", ignore_errors=True)
                if name.startswith("mv"):
                    if (work / "rawcopy").exists():
                        shutil.rmtree(work / "rawcopy")
                    shutil.copytree(raw, work / "rawcopy")
                    if IS_ROOT:
                        run(["chown", "-R", "postgres:", str(work / "rawcopy")])
                (standby.data / "standby.signal").write_text("")
                standby.conf(f"archive_mode=off\nrestore_command='{command}'\nhot_standby=on\n")
                if IS_ROOT:
                    run(["chown", "-R", "postgres:", str(standby.data)])
                subprocess.run(["sync"])
                start = time.perf_counter()
                standby.start()
                standby.wait_replayed(target)
                elapsed = time.perf_counter() - start
                standby.stop("immediate")
                # The on-demand fetcher outlives the server until idle: end it before the next run.
                subprocess.run(["pkill", "-f", f"follow {standby.data}"], stderr=subprocess.DEVNULL)
                time.sleep(0.2)
                results.setdefault(name, []).append(elapsed)
                print(f"bench: round {r + 1} {name}: {elapsed:.2f}s", file=sys.stderr)

        # Spool-hit latency: one wal-fetch call serving a ready segment, process start included.
        spool_dir = work / "spooltest"
        (spool_dir / "pg_wal" / ".wal-g" / "prefetch").mkdir(parents=True)
        # A data directory as wal-fetch recognises one (it serves a spool only there).
        (spool_dir / "PG_VERSION").write_text("15\n")
        (spool_dir / "standby.signal").write_text("")
        seg = segments[len(segments) // 2]
        lat = []
        for _ in range(args.spool_calls):
            os.link(raw / seg, spool_dir / "pg_wal" / ".wal-g" / "prefetch" / seg)
            # What the fetcher leaves beside a segment it walked (here: no record open at its end).
            (spool_dir / "pg_wal" / ".wal-g" / "prefetch" / f".walfetch-open-{seg}").write_text("null")
            t0 = time.perf_counter()
            run([str(walfetch), "--prefix", str(archive), "wal-fetch", seg, "pg_wal/RECOVERYXLOG"], cwd=spool_dir,
                env=dict(env, WALFETCH_LOG_LEVEL="error"))
            lat.append((time.perf_counter() - t0) * 1000)
            os.unlink(spool_dir / "pg_wal" / "RECOVERYXLOG")
        lat.sort()

        floor = statistics.median(results["mv (floor)"])
        print(f"\nWAL replay of {seg_count} segments ({seg_count * 16} MB, lz4 in the archive), "
              f"median of {args.rounds} rounds, from postgres start to the last archived LSN\n")
        print("| restore_command | seconds | segments/s | vs mv floor |")
        print("|---|---|---|---|")
        for name, times in results.items():
            t = statistics.median(times)
            print(f"| {name} | {t:.2f} | {seg_count / t:.1f} | {t / floor:.2f}x |")
        print(f"\nwal-fetch served from the spool, {len(lat)} calls: median {statistics.median(lat):.2f} ms, "
              f"p99 {lat[int(len(lat) * 0.99) - 1]:.2f} ms")
    finally:
        clean_up(work, (slow_tls, tls, slow, s3), ("standby", "primary"))


NAME = "replay"
HELP = "WAL replay speed against the floor and the peers"


def add_arguments(p):
    p.add_argument("--scale", type=int, default=110)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--spool-calls", type=int, default=1000)
    p.add_argument("--only", help="only the restore_commands matching this (and the mv floor)")
    p.add_argument("--writer", choices=["walfetch", "walrus"], default="walfetch",
                   help="who writes the wal-g archive's WAL (lz4): walfetch's wal-push or walrus's")
