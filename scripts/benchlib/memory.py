"""`scripts/bench memory [--sizes 1 10] [--partition-mb 1024] [--encrypt]`

peak RSS of backup-fetch from the local S3 server for backups of each size (GB of
incompressible files in a real cluster, in partitions of wal-g's default 1 GiB),
walfetch and walrus: a bounded restore has the same peak at every size.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .harness import (
    IS_ROOT,
    LIBSODIUM,
    Pg,
    ROOT,
    S3,
    WalArchive,
    as_pg,
    pg_bin,
    run,
    settle,
    timed,
    tool,
)


def main(args):
    """Peak RSS of backup-fetch from S3 for backups of different sizes: the same at every size."""
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    crypt = LIBSODIUM if args.encrypt else {}
    work = Path(tempfile.mkdtemp(prefix="walfetch-bench-"))
    os.chmod(work, 0o755)
    s3 = None
    primary = None
    try:
        walfetch = work / "walfetch"
        shutil.copy(ROOT / "target/release/walfetch", walfetch)
        walrus = work / "walrus"
        shutil.copy(tool("walrus"), walrus)
        if IS_ROOT:
            run(["chown", "-R", "postgres:", str(work)])
        s3 = S3(work / "s3")
        primary = Pg(work, "primary")
        run(as_pg([pg_bin() / "initdb", "-D", primary.data, "-A", "trust", "-U", "postgres", "--no-sync"]), stdout=subprocess.DEVNULL)
        primary.conf("fsync=off\n")
        wal = WalArchive(work, primary)
        primary.start()
        rows = []
        filled = 0
        for gb in sorted(args.sizes):
            # Incompressible files beside template1's relations (PostgreSQL ignores
            # relfilenodes it does not know; a backup carries them like any other file),
            # in 1 GiB segments as PostgreSQL writes large relations.
            want = int(gb * (1 << 30))
            base = Path(primary.data) / "base" / "1"
            n = 0
            while filled < want:
                chunk = min(1 << 30, want - filled)
                path = base / (f"9000000.{n}" if n else "9000000")
                while path.exists():
                    n += 1
                    path = base / f"9000000.{n}"
                with open(path, "wb") as f:
                    left = chunk
                    while left:
                        block = min(left, 64 << 20)
                        f.write(os.urandom(block))
                        left -= block
                if IS_ROOT:
                    run(["chown", "postgres:", str(path)])
                filled += chunk
                n += 1
            name = f"{gb:g}gb"
            env = dict(os.environ, **s3.env(), **crypt, WALG_S3_PREFIX=f"s3://bench/{name}", WALG_COMPRESSION_METHOD="lz4",
                       WALG_TAR_SIZE_THRESHOLD=str(args.partition_mb << 20), PGHOST=str(primary.sock),
                       PGPORT=str(primary.port), PGUSER="postgres", WALFETCH_LOG_LEVEL="warn")
            wal.mark()
            run(as_pg([walfetch, "backup-push", primary.data]), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wal.publish(walfetch, [env])
            root = work / "s3" / "bench" / name / "basebackups_005"
            stored = sum(f.stat().st_size for f in root.rglob("*.lz4") if f.is_file())
            parts = len([f for f in root.rglob("*.lz4") if f.is_file()])
            renv = dict(os.environ, **s3.env(), **crypt, WALG_S3_PREFIX=f"s3://bench/{name}", WALFETCH_LOG_LEVEL="warn", WALG_LOG_LEVEL="ERROR")
            target = work / "restored"
            runs = [("walfetch", [walfetch, "backup-fetch", target, "LATEST", "--no-sync"], {}),
                    ("walrus", [walrus, "backup-fetch", target, "LATEST"], {})]
            for variant in args.variant or []:
                key, _, value = variant.partition("=")
                runs.append((f"walfetch, {key}={value}", [walfetch, "backup-fetch", target, "LATEST", "--no-sync"], {key: value}))
            for tool_name, cmd, extra in runs:
                settle(target, [])
                t, peak, _ = timed([str(c) for c in cmd], dict(renv, **extra))
                rows.append((tool_name, gb, stored, parts, t, peak))
                print(f"bench: memory: {tool_name} restored {gb:g} GB in {t:.1f}s, peak RSS {peak / 1024:.1f} MiB", file=sys.stderr)
            shutil.rmtree(target, ignore_errors=True)
            shutil.rmtree(work / "s3" / "bench" / name, ignore_errors=True)
        print(f"\nbackup-fetch from the local S3 server of backups of incompressible files, partitions of "
              f"{args.partition_mb} MiB (wal-g's default is 1 GiB), lz4{' + libsodium' if crypt else ''}; peak RSS of the restoring process\n")
        print("| tool | backup | compressed | partitions | seconds | MB/s | peak RSS (MiB) |")
        print("|---|---|---|---|---|---|---|")
        for tool_name, gb, stored, parts, t, peak in rows:
            print(f"| {tool_name} | {gb:g} GB | {stored / 1e9:.2f} GB | {parts} | {t:.1f} | {stored / 1e6 / t:.0f} | {peak / 1024:.1f} |")
    finally:
        if primary:
            subprocess.run(as_pg([pg_bin() / "pg_ctl", "-D", primary.data, "-m", "immediate", "stop"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if s3:
            s3.stop()
        shutil.rmtree(work, ignore_errors=True)


NAME = "memory"
HELP = "peak RSS of backup-fetch for backups of different sizes"


def add_arguments(p):
    p.add_argument("--sizes", type=float, nargs="+", default=[1, 10], help="backup sizes in GB (incompressible data)")
    p.add_argument("--partition-mb", type=int, default=1024, help="backup-push's WALG_TAR_SIZE_THRESHOLD in MiB")
    p.add_argument("--variant", action="append", metavar="KEY=VALUE", help="also run walfetch with this setting (repeatable)")
    p.add_argument("--encrypt", action="store_true", help="backups encrypted with libsodium")
