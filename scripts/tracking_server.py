"""One MLflow tracking server for a team: PostgreSQL backend store, artifact folder.

    make tracking-server                  # .tracking/, http://127.0.0.1:5000
    make tracking-server TRACKING_HOST=0.0.0.0 TRACKING_PORT=5000
    .venv/bin/python scripts/tracking_server.py --dir .tracking --host 0.0.0.0 \\
        -- --allowed-hosts mlflow.lab.example:5000   # after --: `mlflow server` options

Everything lives under ``--dir`` (default ``.tracking``):

    pg/            the PostgreSQL cluster (initdb on first start), database ``mlflow``
    pg-password    the password of the database user ``mlflow`` (mode 600, made once)
    postgres.log   PostgreSQL's log
    artifacts/     the artifact store, served by the MLflow server (clients upload
                   through it: they need no access to this folder)

PostgreSQL listens on 127.0.0.1 only (port ``--pg-port``, default: a free one at each
start), with password authentication; only the MLflow server talks to it. The MLflow
server listens on ``--host``/``--port``; clients use ``http://HOST:PORT`` as
``tracking.uri=...`` or ``MLFLOW_TRACKING_URI``. Ctrl-C (or SIGTERM) stops the MLflow
server, then PostgreSQL. The data stay for the next start.

Bound to anything but 127.0.0.1, MLflow checks the Host header of every request; the
script then allows this machine's names and addresses (``--allowed-hosts`` after
``--`` replaces that list), or ``http://HOSTNAME:5000`` gets 403 on every API call.

PostgreSQL refuses to run as root: started as root, the script runs the PostgreSQL
programs as the ``postgres`` user (or ``nobody``) with ``runuser`` and hands ``pg/``
to that user. The binaries are looked up on ``PATH``, then in
``/usr/lib/postgresql/*/bin`` (Debian/Ubuntu's ``postgresql`` package). The MLflow
server needs ``psycopg2`` (the ``cluster`` extra: ``pip install -e '.[cluster]'``).
"""

import argparse
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

DB_USER = "mlflow"
DB_NAME = "mlflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent

    def version(path: str) -> int:
        part = Path(path).parts[-3]
        return int(part) if part.isdigit() else 0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if candidates:
        return Path(candidates[-1]).parent
    raise FileNotFoundError(
        "PostgreSQL server programs (initdb, pg_ctl) not found on PATH or in "
        "/usr/lib/postgresql/*/bin; install them, e.g. `apt-get install -y postgresql`")


def run_as() -> str | None:
    """The unprivileged user to run PostgreSQL as, when we are root (else None)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and there is neither a 'postgres' nor a "
                       "'nobody' user to run PostgreSQL as")


class Postgres:
    """A PostgreSQL cluster in a folder, driven with initdb/pg_ctl."""

    def __init__(self, root: Path, port: int | None = None, bindir: Path | None = None):
        self.root = Path(root).resolve()
        self.data = self.root / "pg"
        self.log = self.root / "postgres.log"
        self.port = port or free_port()
        self.bindir = bindir or pg_bindir()
        self.user = run_as()
        self.password_file = self.root / "pg-password"

    # -- helpers --------------------------------------------------------------------
    def _cmd(self, program: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / program), *args]
        return ["runuser", "-u", self.user, "--", *cmd] if self.user else cmd

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(self._cmd(program, *args), capture_output=True, text=True,
                              cwd="/")
        if proc.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} failed ({proc.returncode}):"
                               f"\n{proc.stdout}\n{proc.stderr}")
        return proc

    def _give(self, path: Path) -> None:
        """Hand ``path`` to the PostgreSQL user (when we are root)."""
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    @staticmethod
    def _write_private(path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    @property
    def uri(self) -> str:
        """The SQLAlchemy URI for MLflow (the password goes in ``PGPASSWORD``)."""
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    # -- life cycle -----------------------------------------------------------------
    def init(self) -> None:
        """initdb on first use: user ``mlflow`` with a random password, UTF-8."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            self._write_private(self.password_file, secrets.token_urlsafe(24) + "\n")
        if (self.data / "PG_VERSION").exists():
            self._give(self.data)
            return
        self.data.mkdir(mode=0o700, exist_ok=True)
        self._give(self.data)
        if self.user:  # the unprivileged user must reach the folder
            cmd = ["runuser", "-u", self.user, "--", "test", "-w", str(self.data)]
            if subprocess.run(cmd).returncode != 0:
                raise PermissionError(
                    f"user {self.user!r} cannot write {self.data}: a parent folder is "
                    "closed to it; use a --dir it can reach (e.g. under /srv or /tmp)")
        pwfile = self.root / ".initdb-pw"  # for the PostgreSQL user only, removed after
        self._write_private(pwfile, self.password + "\n")
        self._give(pwfile)
        try:
            self._run("initdb", "-D", str(self.data), "-U", DB_USER,
                      f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                      "--locale=C")
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self) -> None:
        """Start on 127.0.0.1:port (TCP only) and create the database if needed."""
        self.log.touch()
        self._give(self.log)
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} "
                   "-c unix_socket_directories=''")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")
        self.create_database()

    def create_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=DB_USER,
                                password=self.password, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DB_NAME}"')
        finally:
            conn.close()

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


def allowed_hosts(port: int) -> str:
    """Host headers to accept when bound to all interfaces: this machine's names and
    the addresses they resolve to (``getaddrinfo``), bare and with the port (MLflow's
    default admits only localhost and private-range addresses)."""
    names = {"localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}
    try:
        names |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        pass
    try:  # and those of its fully qualified name (the host's own resolver, no traffic)
        names |= {info[4][0] for info in socket.getaddrinfo(socket.getfqdn(), None)}
    except OSError:
        pass
    names = sorted(n if ":" not in n else f"[{n}]" for n in names if n)
    return ",".join([*names, *(f"{n}:{port}" for n in names)])


def mlflow_server_cmd(pg: Postgres, artifacts: Path, host: str, port: int,
                      workers: int, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--backend-store-uri", pg.uri,
           "--artifacts-destination", str(artifacts),
           "--host", host, "--port", str(port), "--workers", str(workers)]
    if host not in ("127.0.0.1", "localhost", "::1") and "--allowed-hosts" not in extra:
        cmd += ["--allowed-hosts", allowed_hosts(port)]
    return cmd + extra


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- go to `mlflow server`.")
    parser.add_argument("--dir", default=".tracking", type=Path,
                        help="folder for the database and the artifacts (.tracking)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface for the MLflow server (0.0.0.0: for the team)")
    parser.add_argument("--port", type=int, default=5000, help="MLflow server port")
    parser.add_argument("--pg-port", type=int, default=0,
                        help="PostgreSQL port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--workers", type=int, default=2, help="MLflow server workers")
    args = parser.parse_args(argv)

    pg = Postgres(args.dir, port=args.pg_port or None)
    artifacts = pg.root / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    pg.init()
    pg.start()
    print(f"PostgreSQL {pg.bindir.parent.name} on 127.0.0.1:{pg.port}, data in "
          f"{pg.data}" + (f" (run as {pg.user})" if pg.user else ""), flush=True)

    env = {**os.environ, "PGPASSWORD": pg.password}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    server = None

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server = subprocess.Popen(
            mlflow_server_cmd(pg, artifacts, args.host, args.port, args.workers, extra),
            env=env)
        public = socket.gethostname() if args.host in ("0.0.0.0", "::") else args.host
        print(f"MLflow server on {args.host}:{args.port}, artifacts in {artifacts}\n"
              f"  export MLFLOW_TRACKING_URI=http://{public}:{args.port}"
              "   # or tracking.uri=...; Ctrl-C stops the server and the database",
              flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut
            signal.signal(sig, signal.SIG_IGN)       # the clean-up short
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        pg.stop()
        print("stopped the MLflow server and PostgreSQL", flush=True)


if __name__ == "__main__":
    sys.exit(main())
