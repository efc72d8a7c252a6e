"""`scripts/bench barman [--scale S] [--replay-scale S2] [--rounds R] [--compression gzip]`

A barman-cloud archive (CloudNativePG's writer) in the local S3 server: a primary with
pgbench data (scale S) archives its WAL with barman-cloud-wal-archive and is backed up by
barman-cloud-backup (both --gzip by default); then S2 more of pgbench's data is written
for replay. Restore: walfetch backup-fetch (no sync, and synced) against
barman-cloud-restore (which never syncs), time and peak RSS. Replay: a standby restored
from the backup replays all WAL after it, timed from postgres start to the last archived
LSN, with restore_command = mv of the uncompressed segments (the floor), walfetch
wal-fetch (prefetch on), barman-cloud-wal-restore, and barman-cloud-wal-restore
--parallel 4 with its spool (barman 3.19+).
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
    clean_up,
    IS_ROOT,
    Pg,
    ROOT,
    S3,
    as_pg,
    pg_bin,
    run,
    settle,
    timed,
)

SERVER = "cluster-example"


def barman_tool(name):
    path = Path(os.environ.get("WALFETCH_BARMAN_BIN", "/opt/barman-venv/bin")) / name
    if not path.exists():
        sys.exit(f"bench: {path} is not installed (scripts/install-deps --bench)")
    return path


def main(args):
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    work = Path(tempfile.mkdtemp(prefix="walfetch-bench-"))
    os.chmod(work, 0o755)
    s3 = primary = None
    try:
        walfetch = work / "walfetch"
        shutil.copy(ROOT / "target/release/walfetch", walfetch)
        raw = work / "raw"
        raw.mkdir()
        if IS_ROOT:
            run(["chown", "-R", "postgres:", str(work)])
        s3 = S3(work / "s3")
        endpoint = f"http://127.0.0.1:{s3.port}"
        creds = {k: v for k, v in s3.env().items() if k.startswith("AWS_ACCESS") or k.startswith("AWS_SECRET")}
        benv = dict(os.environ, AWS_DEFAULT_REGION="us-east-1", AWS_REQUEST_CHECKSUM_CALCULATION="when_required",
                    AWS_RESPONSE_CHECKSUM_VALIDATION="when_required", **creds)
        wenv = dict(os.environ, WALFETCH_LOG_LEVEL="warn", AWS_REGION="us-east-1", **creds)
        source = "s3://bench/barman"
        cloud = ["--cloud-provider", "aws-s3", "--endpoint-url", endpoint]
        flag = f"--{args.compression}" if args.compression != "none" else ""

        print("bench: writing the barman-cloud archive", file=sys.stderr)
        primary = Pg(work, "primary")
        run(as_pg([pg_bin() / "initdb", "-D", primary.data, "-A", "trust", "-U", "postgres", "--no-sync"]), stdout=subprocess.DEVNULL)
        archive = f"cp %p {raw}/%f && {barman_tool('barman-cloud-wal-archive')} {' '.join(cloud)} {flag} {source} {SERVER} %p"
        primary.conf(f"archive_mode=on\narchive_command='{archive}'\nmax_wal_size='8GB'\nfsync=off\n")
        primary.start(benv)
        pgbench = ["pgbench", "-i", "-q", "-h", primary.sock, "-p", str(primary.port), "-U", "postgres"]
        run(as_pg(pgbench + ["-s", str(args.scale), "postgres"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run(as_pg([barman_tool("barman-cloud-backup")] + cloud + ["-h", primary.sock, "-p", str(primary.port), "-U", "postgres",
                                                               "--immediate-checkpoint"] + ([flag] if flag else []) + [source, SERVER]),
            env=benv, stdout=subprocess.DEVNULL)
        primary.sql("CREATE DATABASE replay")
        run(as_pg(pgbench + ["-s", str(args.replay_scale), "replay"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = primary.sql("SELECT pg_current_wal_lsn()")
        want = primary.sql(f"SELECT pg_walfile_name('{target}')")
        primary.sql("SELECT pg_switch_wal()")
        while (primary.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") or "") < want:
            time.sleep(0.2)
        primary.stop()
        backup_id = sorted(p.name for p in (work / "s3" / "bench" / "barman" / SERVER / "base").iterdir())[-1]
        stored = sum(f.stat().st_size for f in (work / "s3" / "bench" / "barman" / SERVER / "base" / backup_id).iterdir()) / 1e6
        seg_count = len(list(raw.iterdir()))
        print(f"bench: backup {backup_id} ({stored:.0f} MB stored), {seg_count} segments, target LSN {target}", file=sys.stderr)

        walfetch_args = [walfetch, "--prefix", source, "--endpoint", endpoint, "--path-style"]
        restored = work / "restored"
        restores = {
            "walfetch backup-fetch, no sync": as_pg(walfetch_args + ["backup-fetch", restored, "LATEST", "--no-sync"]),
            "walfetch backup-fetch (synced)": as_pg(walfetch_args + ["backup-fetch", restored, "LATEST"]),
            "barman-cloud-restore (no sync)": as_pg([barman_tool("barman-cloud-restore")] + cloud + [source, SERVER, backup_id, restored]),
        }
        restore_results = {}
        for r in range(args.rounds):
            for name, cmd in restores.items():
                settle(restored, [work / "s3" / "bench" / "barman" / SERVER / "base" / backup_id])
                env = benv if name.startswith("barman") else wenv
                elapsed, rss, _ = timed(cmd, env)
                restore_results.setdefault(name, []).append((elapsed, rss))
                print(f"bench: round {r + 1} {name}: {elapsed:.2f}s, {rss / 1024:.1f} MiB", file=sys.stderr)

        cred_line = " ".join(f"{k}={v}" for k, v in creds.items())
        bspool = work / "barman-spool"
        replays = {
            "mv (floor)": f"mv {work}/rawcopy/%f %p",
            "walfetch": f"env {cred_line} AWS_REGION=us-east-1 {' '.join(map(str, walfetch_args))} wal-fetch %f %p",
            "barman-cloud-wal-restore": (f"env {cred_line} AWS_DEFAULT_REGION=us-east-1 AWS_RESPONSE_CHECKSUM_VALIDATION=when_required "
                                         f"{barman_tool('barman-cloud-wal-restore')} {' '.join(cloud)} {source} {SERVER} %f %p"),
            "barman-cloud-wal-restore --parallel 4": (f"env {cred_line} AWS_DEFAULT_REGION=us-east-1 AWS_RESPONSE_CHECKSUM_VALIDATION=when_required "
                                                      f"{barman_tool('barman-cloud-wal-restore')} {' '.join(cloud)} --parallel 4 "
                                                      f"--spool-dir {bspool} {source} {SERVER} %f %p"),
        }
        replay_results = {}
        for r in range(args.rounds):
            for name, command in replays.items():
                standby = Pg(work, "standby")
                if standby.data.exists():
                    shutil.rmtree(standby.data)
                shutil.rmtree(bspool, ignore_errors=True)
                bspool.mkdir()
                run(as_pg(walfetch_args + ["backup-fetch", standby.data, "LATEST", "--no-sync"]), env=wenv,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if name.startswith("mv"):
                    shutil.rmtree(work / "rawcopy", ignore_errors=True)
                    shutil.copytree(raw, work / "rawcopy")
                (standby.data / "standby.signal").write_text("")
                standby.conf(f"archive_mode=off\nrestore_command='{command}'\nhot_standby=on\n")
                if IS_ROOT:
                    run(["chown", "-R", "postgres:", str(work)])
                subprocess.run(["sync"])
                start = time.perf_counter()
                standby.start()
                standby.wait_replayed(target)
                elapsed = time.perf_counter() - start
                standby.stop("immediate")
                subprocess.run(["pkill", "-f", f"follow {standby.data}"], stderr=subprocess.DEVNULL)
                time.sleep(0.2)
                replay_results.setdefault(name, []).append(elapsed)
                print(f"bench: round {r + 1} {name}: {elapsed:.2f}s", file=sys.stderr)

        print(f"\nRestore of a barman-cloud backup (pgbench scale {args.scale}, {args.compression}, {stored:.0f} MB stored) "
              f"from the local S3 server, median of {args.rounds} rounds\n")
        print("| case | seconds | peak RSS (MiB) | vs barman-cloud-restore |")
        print("|---|---|---|---|")
        base = statistics.median(t for t, _ in restore_results["barman-cloud-restore (no sync)"])
        for name, runs in restore_results.items():
            t = statistics.median(x for x, _ in runs)
            print(f"| {name} | {t:.2f} | {max(m for _, m in runs) / 1024:.1f} | {t / base:.2f} |")
        floor = statistics.median(replay_results["mv (floor)"])
        print(f"\nReplay of {seg_count} segments ({args.compression} in the archive), median of {args.rounds} rounds, "
              f"from postgres start to the last archived LSN\n")
        print("| restore_command | seconds | segments/s | vs mv floor |")
        print("|---|---|---|---|")
        for name, times in replay_results.items():
            t = statistics.median(times)
            print(f"| {name} | {t:.2f} | {seg_count / t:.1f} | {t / floor:.2f}x |")
    finally:
        clean_up(work, (s3,), ("standby", "primary"))


NAME = "barman"
HELP = "restore and replay of a barman-cloud archive against barman-cloud-restore and -wal-restore"


def add_arguments(p):
    p.add_argument("--scale", type=int, default=50)
    p.add_argument("--replay-scale", type=int, default=50, help="pgbench data written after the backup, for replay")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compression", default="gzip", choices=["gzip", "bzip2", "snappy", "lz4", "none"])
