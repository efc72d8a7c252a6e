"""What every scenario shares: running commands (as postgres when root), timing them with peak RSS and CPU, a settled page cache, the local S3 server, PostgreSQL clusters, pgBackRest, WAL archives, a TLS front and a latency proxy."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


IS_ROOT = os.geteuid() == 0


ACCESS, SECRET = "bench-access", "bench-secret-0123456789"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def as_pg(cmd):
    return (["runuser", "-u", "postgres", "--"] if IS_ROOT else []) + [str(c) for c in cmd]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin():
    majors = sorted(int(p.name) for p in Path("/usr/lib/postgresql").iterdir() if p.name.isdigit())
    return Path(f"/usr/lib/postgresql/{majors[-1]}/bin")


def tool(name):
    for d in [Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "bin", Path("/usr/local/bin"), Path("/usr/bin")]:
        if (d / name).exists():
            return d / name
    sys.exit(f"bench: {name} is not installed (scripts/install-deps --bench)")


def measured(cmd):
    """cmd under GNU time, which reports the peak RSS of the command itself. (The rusage
    of a child of this Python process starts at the interpreter's own RSS, copied at
    fork: about 17 MiB, which hid every smaller peak.)"""
    out = tempfile.NamedTemporaryFile(prefix="walfetch-bench-rss-", delete=False)
    out.close()
    return ["/usr/bin/time", "-f", "%M %U %S", "-o", out.name] + [str(c) for c in cmd], Path(out.name)


def usage(path):
    """(peak RSS in KiB, user + system CPU seconds) from measured()'s report."""
    lines = path.read_text().strip().splitlines()
    path.unlink()
    fields = lines[-1].split() if lines else []
    if len(fields) != 3:
        return 0, 0.0
    return int(fields[0]), float(fields[1]) + float(fields[2])


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def settle(target, inputs):
    """Puts the machine in the same state before every timed restore: the previous
    restore removed and written back, the page cache emptied (as root), and this run's
    inputs read back into it. Without this, what one run left behind (cached pages of a
    deleted tree, reclaim work) fell on the next: the same restore moved by +-30 %."""
    if target.exists():
        shutil.rmtree(target)
    subprocess.run(["sync"])
    if IS_ROOT:
        try:
            DROP_CACHES.write_text("3\n")
        except OSError:
            pass
    for root in inputs:
        files = [root] if root.is_file() else (f for f in root.rglob("*") if f.is_file())
        for f in files:
            with open(f, "rb") as fh:
                while fh.read(1 << 20):
                    pass
    time.sleep(0.5)


def clean_up(work, servers=(), clusters=("primary",)):
    """The end of every scenario: its servers stopped, the clusters under `work` stopped
    at once (those that were started), and `work` removed."""
    for server in servers:
        if server:
            server.stop()
    for name in clusters:
        subprocess.run(as_pg([pg_bin() / "pg_ctl", "-D", work / name, "-m", "immediate", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(work, ignore_errors=True)


def timed(cmd, env):
    """Runs cmd; returns (seconds, peak RSS in KiB, CPU seconds) of that process."""
    cmd, rss_file = measured(cmd)
    start = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, _ = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - start
    err = p.stderr.read().decode(errors="replace")
    rss, cpu = usage(rss_file)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench: {cmd} failed: {err}")
    return elapsed, rss, cpu


class S3:
    def __init__(self, data):
        self.port = free_port()
        (data / "bench").mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([tool("s3s-fs"), "--host", "127.0.0.1", "--port", str(self.port),
                                      "--access-key", ACCESS, "--secret-key", SECRET, str(data)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port)).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit("bench: s3s-fs did not start")

    def env(self):
        return {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}", "AWS_ENDPOINT": f"http://127.0.0.1:{self.port}",
                "AWS_S3_FORCE_PATH_STYLE": "true"}

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Pg:
    """A PostgreSQL data directory in the bench's work dir, run as postgres."""

    def __init__(self, work, name):
        self.data = work / name
        self.sock = work / f"{name}-sock"
        self.sock.mkdir(exist_ok=True)
        self.port = free_port()
        self.log = work / f"{name}.log"
        if IS_ROOT:
            run(["chown", "postgres:", str(self.sock)])

    def conf(self, text):
        with open(self.data / "postgresql.auto.conf", "a") as f:
            f.write(text)

    def start(self, env=None):
        self.conf(f"port={self.port}\nunix_socket_directories='{self.sock}'\nlisten_addresses=''\n")
        run(as_pg([pg_bin() / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "300", "start"]),
            stdout=subprocess.DEVNULL, env=env)

    def stop(self, mode="fast"):
        subprocess.run(as_pg([pg_bin() / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_replayed(self, target, interval=0.01):
        """Returns once the server has replayed `target`, asking through one psql session
        (a psql process per poll, at this rate, took an eighth of the machine's CPU from
        whatever the replay shares the cores with)."""
        session = subprocess.Popen(as_pg(["psql", "-X", "-At", "-h", self.sock, "-p", str(self.port), "-U", "postgres",
                                          "-d", "postgres"]), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        try:
            while True:
                session.stdin.write(f"SELECT pg_last_wal_replay_lsn() >= '{target}';\n")
                session.stdin.flush()
                line = session.stdout.readline()
                if not line:
                    sys.exit("bench: the standby's psql session ended")
                if line.strip() == "t":
                    return
                time.sleep(interval)
        finally:
            session.stdin.close()
            session.wait()

    def sql(self, q):
        out = subprocess.run(as_pg(["psql", "-X", "-At", "-h", self.sock, "-p", str(self.port), "-U", "postgres",
                                     "-d", "postgres", "-c", q]), capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None


class TlsFront:
    """socat terminating TLS in front of a local port: pgBackRest speaks S3 only over HTTPS.
    Its certificate (for 127.0.0.1) is signed by a CA of the run's own, `ca`, which both
    pgBackRest (repo1-storage-ca-file) and walfetch (WALG_S3_CA_CERT_FILE) can trust."""

    def __init__(self, work, upstream_port):
        self.ca = work / "tls-ca.pem"
        cert, key = work / "tls-cert.pem", work / "tls-key.pem"
        if not cert.exists():
            ca_key, csr, ext = work / "tls-ca.key", work / "tls.csr", work / "tls.ext"
            ext.write_text("subjectAltName=IP:127.0.0.1,DNS:127.0.0.1\n")
            for cmd in (["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", self.ca,
                         "-days", "2", "-subj", "/CN=walfetch-bench-ca"],
                        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
                        ["openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
                         "-days", "2", "-extfile", ext]):
                run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            os.chmod(self.ca, 0o644)
        self.port = free_port()
        self.proc = subprocess.Popen(["socat", f"OPENSSL-LISTEN:{self.port},reuseaddr,fork,cert={cert},key={key},verify=0",
                                      f"TCP:127.0.0.1:{upstream_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port)).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit("bench: socat did not start (scripts/install-deps --bench)")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class WalArchive:
    """The primary's WAL, copied aside by its archive_command, then published into the
    bench's archive prefixes after the backups: backup-fetch checks, before downloading,
    that the archive holds the WAL a backup needs (walrus and pgBackRest do not look)."""

    def __init__(self, work, primary):
        self.dir = work / "walarchive"
        self.dir.mkdir()
        if IS_ROOT:
            run(["chown", "postgres:", str(self.dir)])
        primary.conf(f"archive_mode=on\narchive_command='cp %p {self.dir}/%f'\n")
        self.primary = primary
        self.since = None

    def mark(self):
        """Call before the backups: WAL from here on is published."""
        self.since = self.primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")

    def publish(self, walfetch, envs):
        """Switches to a new segment, waits for the archive, and pushes every segment
        since mark() into each archive (one env per prefix)."""
        last = self.primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        self.primary.sql("SELECT pg_switch_wal()")
        for _ in range(600):
            if (self.dir / last).exists():
                break
            time.sleep(0.1)
        else:
            sys.exit(f"bench: {last} was never archived")
        segments = sorted(f for f in self.dir.iterdir() if len(f.name) == 24 and f.name >= self.since and f.name <= last)
        for env in envs:
            for seg in segments:
                run(as_pg([walfetch, "wal-push", seg]), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class PgBackRest:
    """A pgBackRest stanza `bench` for one data directory, with a repository in a local
    directory (posix) or in the local S3 server (through a TLS front on `tls_port`)."""

    def __init__(self, work, name, primary, tls_port=None, binary="pgbackrest", bundle=False):
        self.binary = binary
        self.conf = work / f"pgbackrest-{name}.conf"
        base = work / f"pgbackrest-{name}"
        for d in ("log", "lock", "spool"):
            (base / d).mkdir(parents=True, exist_ok=True)
        lines = ["[global]", f"log-path={base / 'log'}", f"lock-path={base / 'lock'}", f"spool-path={base / 'spool'}",
                 "log-level-console=warn", "log-level-file=off", "compress-type=lz4", "start-fast=y",
                 "archive-check=n", "delta=n", "repo1-retention-full=9999999"] + (["repo1-bundle=y"] if bundle else [])
        if tls_port is None:
            (base / "repo").mkdir(exist_ok=True)
            lines.append(f"repo1-path={base / 'repo'}")
        else:
            lines += ["repo1-type=s3", "repo1-path=/pgbackrest", "repo1-s3-bucket=bench", "repo1-s3-endpoint=127.0.0.1",
                      f"repo1-storage-port={tls_port}", "repo1-s3-region=us-east-1", "repo1-s3-uri-style=path",
                      f"repo1-storage-ca-file={work / 'tls-ca.pem'}", f"repo1-s3-key={ACCESS}", f"repo1-s3-key-secret={SECRET}"]
        lines += ["[bench]", f"pg1-path={primary.data}", f"pg1-socket-path={primary.sock}", f"pg1-port={primary.port}",
                  "pg1-user=postgres"]
        self.conf.write_text("\n".join(lines) + "\n")
        if IS_ROOT:
            run(["chown", "-R", "postgres:", str(base), str(self.conf)])

    def command(self, *args):
        return f"{self.binary} --config={self.conf} --stanza=bench " + " ".join(str(a) for a in args)

    def run(self, *args):
        run(as_pg([self.binary, f"--config={self.conf}", "--stanza=bench", *args]), stdout=subprocess.DEVNULL)


class LatencyProxy:
    """TCP proxy on 127.0.0.1 in front of `upstream_port` that makes the link behave like
    the internet: `delay` seconds before each HTTP request (each time the client speaks
    after the server has answered) and before each new connection reaches the server, like
    a bucket in another region; with `rate`, each connection's answers capped at `rate`
    bytes/s, and with `bufsize`, small socket buffers on the proxy's side, so a client
    that does not read a connection stalls it instead of it filling large buffers."""

    def __init__(self, upstream_port, delay, rate=None, bufsize=None):
        import threading
        self.delay = delay
        self.rate = rate
        self.bufsize = bufsize
        self.upstream = upstream_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if bufsize:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while not self.stopped:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        import threading
        time.sleep(self.delay)
        try:
            server = socket.socket()
            if self.bufsize:
                server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.bufsize)
                client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.bufsize)
            server.connect(("127.0.0.1", self.upstream))
        except OSError:
            client.close()
            return
        state = {"answered": True}

        def up():
            try:
                while True:
                    data = client.recv(65536)
                    if not data:
                        break
                    if state["answered"]:
                        time.sleep(self.delay)
                        state["answered"] = False
                    server.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    server.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        def down():
            # Pacing: each chunk is due len/rate after the previous one (or now, after a
            # pause), so the connection averages `rate` and never bursts past a chunk.
            due = 0.0
            chunk = 65536 if self.rate else 262144
            try:
                while True:
                    data = server.recv(chunk)
                    if not data:
                        break
                    state["answered"] = True
                    client.sendall(data)
                    if self.rate:
                        now = time.monotonic()
                        due = max(due, now) + len(data) / self.rate
                        if due > now:
                            time.sleep(due - now)
            except OSError:
                pass
            finally:
                client.close()
                server.close()

        threading.Thread(target=up, daemon=True).start()
        down()

    def stop(self):
        self.stopped = True
        self.sock.close()


LIBSODIUM = {"WALG_LIBSODIUM_KEY": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
             "WALG_LIBSODIUM_KEY_TRANSFORM": "hex"}
