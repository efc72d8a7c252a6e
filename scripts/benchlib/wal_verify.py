"""`scripts/bench wal-verify [--segments N] [--server moto|s3s-fs] [--latency-ms MS]`

gap detection at scale: N segment names in a local S3 server (moto by default,
filled in-process); walfetch wal-verify, walrus wal-verify integrity, and a plain
listing with the AWS CLI (when installed), directly and behind a proxy adding MS
per request; time and peak RSS.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import (
    ACCESS,
    LatencyProxy,
    ROOT,
    S3,
    SECRET,
    free_port,
    measured,
    run,
    tool,
    usage,
)


def peak_rss(path):
    return usage(path)[0]


MOTO_SERVER = """
import sys, time
from moto.server import ThreadedMotoServer
from moto.s3.models import s3_backends
port, count = int(sys.argv[1]), int(sys.argv[2])
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
backend = s3_backends["123456789012"]["aws"]
backend.create_bucket("bench", "us-east-1")
for segno in range(2, count + 2):
    backend.put_object("bench", f"pg/wal_005/00000001{segno // 256:08X}{segno % 256:08X}.lz4", b"x")
backend.put_object("bench", "pg/basebackups_005/base_000000010000000000000002_backup_stop_sentinel.json", SENTINEL.encode())
print("ready", flush=True)
sys.stdin.read()
"""


VERIFY_SENTINEL = ('{"LSN":33554472,"FinishLSN":33554688,"PgVersion":150000,"Version":2,'
                   '"StartTime":"2026-11-25T00:00:00Z","FinishTime":"2026-11-25T00:00:01Z"}')


class Moto:
    """moto's S3 server, filled in-process (200,000 PUTs over HTTP take ten minutes)."""

    def __init__(self, count):
        self.port = free_port()
        code = MOTO_SERVER.replace("SENTINEL", repr(VERIFY_SENTINEL))
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(self.port), str(count)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if self.proc.stdout.readline().strip() != b"ready":
            sys.exit("bench: moto did not start (scripts/install-deps --bench)")

    def env(self):
        return {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}", "AWS_S3_FORCE_PATH_STYLE": "true"}

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def main(args):
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    work = Path(tempfile.mkdtemp(prefix="walfetch-bench-"))
    server = proxy = None
    try:
        wal = work / "s3" / "bench" / "pg" / "wal_005"
        wal.mkdir(parents=True)
        for segno in range(2, args.segments + 2):
            (wal / f"00000001{segno // 256:08X}{segno % 256:08X}.lz4").write_bytes(b"x")
        base = work / "s3" / "bench" / "pg" / "basebackups_005"
        base.mkdir()
        (base / "base_000000010000000000000002_backup_stop_sentinel.json").write_text(VERIFY_SENTINEL)
        server = Moto(args.segments) if args.server == "moto" else S3(work / "s3")
        env = dict(os.environ, **server.env(), WALG_S3_PREFIX="s3://bench/pg", WALFETCH_LOG_LEVEL="warn", RUST_LOG="error")
        endpoints = [("", env)]
        if args.latency_ms:
            proxy = LatencyProxy(server.port, args.latency_ms / 1000)
            endpoint = f"http://127.0.0.1:{proxy.port}"
            endpoints.append((f", +{args.latency_ms} ms", dict(env, AWS_ENDPOINT_URL=endpoint, AWS_ENDPOINT=endpoint)))
        walfetch = [str(ROOT / "target/release/walfetch"), "wal-verify", "--wal-segment-size", "16MB"]
        aws = shutil.which("aws")
        rows = []
        for suffix, e in endpoints:
            t, rss = timed_ok(walfetch, e)
            rows.append((f"walfetch wal-verify (S3{suffix})", t, rss))
            if aws:
                t, rss = timed_ok([aws, "s3api", "list-objects-v2", "--bucket", "bench", "--prefix", "pg/wal_005/",
                                   "--endpoint-url", e["AWS_ENDPOINT_URL"], "--query", "length(Contents)"], e)
                rows.append((f"aws s3api list-objects-v2, listing only (S3{suffix})", t, rss))
        t, rss = timed_ok([str(tool("walrus")), "wal-verify", "integrity"], env)
        rows.append(("walrus wal-verify integrity (S3; exits at once: it needs a database connection)", t, rss))
        fenv = dict(os.environ, WALG_FILE_PREFIX=str(wal.parent), WALFETCH_LOG_LEVEL="warn")
        t, rss = timed_ok(walfetch, fenv)
        rows.append(("walfetch wal-verify (directory)", t, rss))
        name = "moto, in memory" if args.server == "moto" else "s3s-fs"
        print(f"\nwal-verify over {args.segments} segment names in a local S3 server ({name})\n")
        print("| command | time (s) | peak RSS (MiB) |")
        print("|---|---|---|")
        for label, t, rss in rows:
            print(f"| {label} | {t:.2f} | {rss / 1024:.1f} |")
    finally:
        for s in (proxy, server):
            if s:
                s.stop()
        shutil.rmtree(work, ignore_errors=True)


def timed_ok(cmd, env):
    """Like timed, but a non-zero exit is a result (verifiers report findings by exit code)."""
    cmd, rss_file = measured(cmd)
    start = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - start
    return elapsed, peak_rss(rss_file)


NAME = "wal-verify"
HELP = "gap detection at scale"


def add_arguments(p):
    p.add_argument("--segments", type=int, default=200_000)
    p.add_argument("--server", choices=["moto", "s3s-fs"], default="moto",
                   help="moto lists in linear time per page; s3s-fs re-reads its directory per request")
    p.add_argument("--latency-ms", type=int, default=50, help="also run behind a proxy adding this delay per request (0: off)")
