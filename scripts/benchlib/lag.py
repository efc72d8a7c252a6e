"""`scripts/bench lag [--samples N] [--rounds R]`

archive-to-replay lag at the archive head: a standby caught up with the archive;
then, one at a time and at a random moment, a new segment is pushed into the
archive (by the tool's own push) and the time from the end of that PUT until the
standby's pg_last_wal_replay_lsn() passes a record in it is taken. walfetch (its
restore_command and wal_retrieve_retry_interval as `backup-fetch --standby`
writes them), walrus wal-fetch and pgBackRest archive-get (PostgreSQL's default
retry interval, as they leave it; walrus also at 1 s), all from the local S3
server; median, p90, max.
"""
import os
import random
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
    s3 = tls = None
    primary = None
    try:
        walfetch = work / "walfetch"
        shutil.copy(ROOT / "target/release/walfetch", walfetch)
        walrus = work / "walrus"
        shutil.copy(tool("walrus"), walrus)
        raw = work / "raw"
        raw.mkdir()
        if IS_ROOT:
            run(["chown", "-R", "postgres:", str(work)])
        s3 = S3(work / "s3")
        tls = TlsFront(work, s3.port)
        env = dict(os.environ, **s3.env(), WALFETCH_LOG_LEVEL="warn")
        wenv = dict(env, WALG_S3_PREFIX="s3://bench/walfetch")
        renv = dict(env, WALG_S3_PREFIX="s3://bench/walrus")
        primary = Pg(work, "primary")
        run(as_pg([pg_bin() / "initdb", "-D", primary.data, "-A", "trust", "-U", "postgres", "--no-sync"]), stdout=subprocess.DEVNULL)
        primary.conf(f"archive_mode=on\narchive_command='cp %p {raw}/%f'\nfsync=off\n")
        primary.start()
        br = PgBackRest(work, "s3", primary, tls.port)
        br.run("stanza-create")
        published = {"walfetch": set(), "walrus": set(), "pgBackRest": set()}

        def push(who, seg):
            path = raw / seg
            if who == "walfetch":
                run(as_pg([walfetch, "wal-push", path]), env=wenv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            elif who == "walrus":
                run(as_pg([walrus, "wal-push", path]), env=renv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            else:
                run(as_pg(["sh", "-c", br.command(f"archive-push {path}")]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            published[who].add(seg)

        def archived(seg):
            for _ in range(600):
                if (raw / seg).exists():
                    return
                time.sleep(0.05)
            sys.exit(f"bench: {seg} was never archived")

        def publish_all(upto):
            for who in published:
                for f in sorted(raw.iterdir()):
                    if len(f.name) == 24 and f.name <= upto and f.name not in published[who]:
                        push(who, f.name)

        penv = dict(wenv, PGHOST=str(primary.sock), PGPORT=str(primary.port), PGUSER="postgres")
        run(as_pg([walfetch, "backup-push", primary.data]), env=penv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        primary.sql("CREATE TABLE lag (i int)")
        # The samples: one marker record per segment, then a switch.
        samples = []
        # Enough for every run on the same archive (walrus is measured twice).
        for i in range(args.samples * args.rounds * 2):
            primary.sql(f"INSERT INTO lag VALUES ({i})")
            lsn = primary.sql("SELECT pg_current_wal_lsn()")
            seg = primary.sql(f"SELECT pg_walfile_name('{lsn}')")
            primary.sql("SELECT pg_switch_wal()")
            archived(seg)
            samples.append((seg, lsn))
        first = samples[0][0]
        publish_all(max(f.name for f in raw.iterdir() if len(f.name) == 24 and f.name < first))
        print(f"bench: {len(samples)} samples per tool, from {first}", file=sys.stderr)

        creds = f"AWS_ACCESS_KEY_ID={ACCESS} AWS_SECRET_ACCESS_KEY={SECRET} AWS_REGION=us-east-1"
        endpoint = f"http://127.0.0.1:{s3.port}"
        walrus_cmd = f"env {creds} AWS_ENDPOINT_URL={endpoint} AWS_S3_FORCE_PATH_STYLE=true WALG_S3_PREFIX=s3://bench/walrus {walrus} wal-fetch %f %p"
        # (archive, restore_command, wal_retrieve_retry_interval): walfetch as
        # backup-fetch --standby writes both; the peers as their users run them, and
        # walrus also with walfetch's interval, to show what the setting alone gives.
        commands = {
            "walfetch": ("walfetch", None, None),
            "walrus": ("walrus", walrus_cmd, "5s"),
            "walrus, retry 1 s": ("walrus", walrus_cmd, "1s"),
            "pgBackRest": ("pgBackRest", br.command(f"--pg1-path={work / 'standby'} archive-get %f \"%p\""), "5s"),
        }
        results = {}
        for _ in range(args.rounds):
            for name, (who, command, interval) in commands.items():
                standby = Pg(work, "standby")
                if standby.data.exists():
                    shutil.rmtree(standby.data)
                run(as_pg([walfetch, "backup-fetch", standby.data, "LATEST", "--standby", "--no-sync"]), env=wenv,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if command is not None:
                    # The peers as their users run them: their restore_command, PostgreSQL's retry interval.
                    standby.conf(f"restore_command='{command}'\nwal_retrieve_retry_interval='{interval}'\n")
                standby.conf("hot_standby=on\n")
                if IS_ROOT:
                    run(["chown", "-R", "postgres:", str(standby.data)])
                standby.start(env)
                head = max(published[who])
                behind = [s for s in samples if s[0] <= head]
                target = behind[-1][1] if behind else "0/0"
                deadline = time.monotonic() + 300
                while standby.sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'") != "t":
                    if time.monotonic() > deadline:
                        sys.exit(f"bench: the {who} standby never caught up (see {standby.log})")
                    time.sleep(0.05)
                mine = [s for s in samples if s[0] > head][: args.samples]
                for seg, lsn in mine:
                    time.sleep(random.uniform(0.2, 2.0))
                    push(who, seg)
                    t0 = time.perf_counter()
                    deadline = time.monotonic() + 120
                    while standby.sql(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'") != "t":
                        if time.monotonic() > deadline:
                            sys.exit(f"bench: the {who} standby never replayed {seg} (see {standby.log})")
                        time.sleep(0.01)
                    lag = time.perf_counter() - t0
                    results.setdefault(name, []).append(lag)
                    print(f"bench: {name} {seg}: {lag:.3f}s", file=sys.stderr)
                standby.stop("immediate")
                subprocess.run(["pkill", "-f", f"follow {standby.data}"], stderr=subprocess.DEVNULL)
        print(f"\nArchive-to-replay lag at the head, {args.samples} segments per tool per round, "
              f"{args.rounds} round(s), local S3 server; seconds from the end of the PUT to the record replayed\n")
        print("| restore_command | median | p90 | max |")
        print("|---|---|---|---|")
        for name, lags in results.items():
            lags.sort()
            print(f"| {name} | {statistics.median(lags):.2f} | {lags[int(len(lags) * 0.9) - 1]:.2f} | {lags[-1]:.2f} |")
    finally:
        clean_up(work, (tls, s3), ("standby", "primary"))


NAME = "lag"
HELP = "archive-to-replay lag at the archive head against the peers"


def add_arguments(p):
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--rounds", type=int, default=1)
