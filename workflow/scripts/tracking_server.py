"""An MLflow tracking server for many machines: PostgreSQL as the store (SQLite on a shared file
system loses writes when jobs on several nodes write at once) and the artifacts proxied by the
server into one directory, so compute nodes need only HTTP to it.

    python workflow/scripts/tracking_server.py start --root DIR --host 0.0.0.0 --port 5000
    python workflow/scripts/tracking_server.py status --root DIR
    python workflow/scripts/tracking_server.py stop --root DIR

`start` prints `MLFLOW_TRACKING_URI=http://HOST:PORT` as its only line on stdout (the rest goes
to stderr), so `export $(python workflow/scripts/tracking_server.py start --root DIR)` works.
DIR holds pgdata/ (the database), pgsocket/ (PostgreSQL's unix socket: it opens no TCP port),
artifacts/ (unless --artifacts puts them elsewhere), postgres.log, mlflow.log, mlflow.pid and
mlflow.url. Run as root, the PostgreSQL commands run as the `postgres` user (initdb refuses
root), which then owns pgdata/ and pgsocket/. Jobs need no access to DIR: they send artifacts
through the server. `start --secure` adds a login to the MLflow server and a password to the
database (tracking_secure.py); a job then needs only DIR/credentials' two variables.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import tracking_secure

DATABASE = "mlflow"
SUPERUSER = "postgres"  # initdb -U: the same role name whoever runs the server
# Only names the socket file (.s.PGSQL.5432): PostgreSQL listens on no TCP port, and the socket
# lies in DIR/pgsocket, so two servers with different roots never collide.
PG_PORT = 5432
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes on Linux, with its terminating NUL
HEALTH_TIMEOUT_S = 180  # MLflow's workers import slowly on a busy 2-core node
INSTALL_POSTGRES = "apt-get install postgresql"
BINARIES = ("initdb", "pg_ctl", "psql")
DEBIAN_VERSIONS = Path("/usr/lib/postgresql")  # Debian keeps each major version's binaries apart


class ServerError(Exception):
    """What went wrong and the fix, in one line."""


@dataclass(frozen=True)
class Layout:
    root: Path
    artifacts_dir: Path | None = None  # start --artifacts: elsewhere than in root

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.root / "pgsocket"

    @property
    def artifacts(self) -> Path:
        return self.artifacts_dir or self.root / "artifacts"

    @property
    def pg_log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def mlflow_log(self) -> Path:
        return self.root / "mlflow.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "mlflow.pid"

    @property
    def url_file(self) -> Path:
        return self.root / "mlflow.url"

    def backend_uri(self, database: str = DATABASE) -> str:
        # libpq takes a socket directory as `host`: SQLAlchemy passes the query on to psycopg2.
        return (
            f"postgresql://{SUPERUSER}@/{database}"
            f"?host={quote(str(self.socket_dir), safe='/')}&port={PG_PORT}"
        )


# ---- PostgreSQL ---------------------------------------------------------------------------


def pg_bindir() -> Path:
    """The directory of initdb, pg_ctl and psql: that of the initdb on PATH (links followed, as
    some images link only the server's binaries into /usr/local/bin), pg_config's answer, else
    Debian's versioned path (not on PATH)."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(Path(out.stdout.strip()))
    except OSError:
        pass  # no pg_config: libpq-dev is not installed, the server may still be
    versions = sorted(DEBIAN_VERSIONS.glob("*/bin"), key=_version_key, reverse=True)
    for bindir in [*candidates, *versions]:
        if all((bindir / name).is_file() for name in BINARIES):
            return bindir
    raise ServerError(f"PostgreSQL's {', '.join(BINARIES)} not found together: {INSTALL_POSTGRES}")


def _version_key(bindir: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in bindir.parent.name.split(".") if p.isdigit())


def running_as_root() -> bool:
    return os.geteuid() == 0


def postgres_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise ServerError(
            f"running as root needs the '{SUPERUSER}' system user to run PostgreSQL as "
            f"({INSTALL_POSTGRES} creates it), or run this script as an ordinary user"
        ) from None


def as_postgres(cmd: list[str]) -> list[str]:
    """initdb and pg_ctl refuse to run as root: run them as the postgres user then."""
    if running_as_root():
        postgres_user()
        return ["runuser", "-u", SUPERUSER, "--", *cmd]
    return cmd


def run_pg(cmd: list[str], what: str, log: Path | None = None, stdin: str | None = None) -> str:
    # cwd=/ because the postgres user may not be allowed into the caller's directory.
    done = subprocess.run(as_postgres(cmd), capture_output=True, text=True, cwd="/", input=stdin)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        where = f"; see {log}" if log else ""
        raise ServerError(f"{what} failed: {lines[-1].strip()}{where}")
    return done.stdout


def give_to_postgres(path: Path) -> None:
    if running_as_root():
        user = postgres_user()
        os.chown(path, user.pw_uid, user.pw_gid)


def prepare_dirs(layout: Layout) -> None:
    socket_file = layout.socket_dir / f".s.PGSQL.{PG_PORT}"
    if len(str(socket_file)) > SOCKET_PATH_MAX:
        raise ServerError(
            f"{socket_file}: too long for a unix socket ({SOCKET_PATH_MAX} bytes at most); "
            "use a shorter --root"
        )
    layout.root.mkdir(parents=True, exist_ok=True)
    # Only this server's owner reads or writes the artifacts (jobs send them through the
    # server), whatever the umask: on a shared node they are other users' models and configs.
    layout.artifacts.mkdir(mode=0o700, parents=True, exist_ok=True)
    if layout.artifacts.stat().st_uid == os.getuid():
        layout.artifacts.chmod(0o700)
    # 0700: with trust authentication the socket directory's permissions are the access
    # control, so only the server's owner (and root) can reach the database.
    for path in (layout.pgdata, layout.socket_dir):
        path.mkdir(mode=0o700, exist_ok=True)
        give_to_postgres(path)
    layout.pg_log.touch()
    give_to_postgres(layout.pg_log)  # pg_ctl opens it as the postgres user
    if running_as_root():
        reach = subprocess.run(as_postgres(["test", "-w", str(layout.pgdata)]), cwd="/")
        if reach.returncode != 0:
            raise ServerError(
                f"user {SUPERUSER} cannot reach {layout.pgdata}: pick a --root outside "
                f"private directories, or let others traverse its parents (chmod o+x)"
            )


def init_database_cluster(layout: Layout, bindir: Path) -> None:
    if (layout.pgdata / "PG_VERSION").is_file():
        return
    run_pg(
        [
            str(bindir / "initdb"),
            f"--pgdata={layout.pgdata}",
            f"--username={SUPERUSER}",
            # The unix socket: its 0700 directory is the gate (prepare_dirs). TCP: refused, so
            # a PostgreSQL started on this data directory any other way (a plain `pg_ctl
            # start` listens on localhost) lets no local user in as superuser.
            "--auth-local=trust",
            "--auth-host=reject",
            "--encoding=UTF8",
            "--no-locale",  # a minimal image may have no locales generated
        ],
        "initdb",
    )
    # The same for any start: no TCP port, the socket in its private directory.
    settings = (
        "\n# tracking_server.py: no TCP port; the socket only in its 0700 directory\n"
        "listen_addresses = ''\n"
        f"unix_socket_directories = '{layout.socket_dir}'\n"
        f"port = {PG_PORT}\n"
    )
    with (layout.pgdata / "postgresql.conf").open("a") as conf:  # root writes it too
        conf.write(settings)


def postgres_running(layout: Layout, bindir: Path) -> bool:
    if not (layout.pgdata / "PG_VERSION").is_file():
        return False
    status = subprocess.run(
        as_postgres([str(bindir / "pg_ctl"), "status", f"--pgdata={layout.pgdata}"]),
        capture_output=True,
        cwd="/",
    )
    return status.returncode == 0


def start_postgres(layout: Layout, bindir: Path) -> None:
    if postgres_running(layout, bindir):
        return
    # pg_ctl hands -o to a shell, hence the quoting.
    options = f"-k {shlex.quote(str(layout.socket_dir))} -c listen_addresses='' -p {PG_PORT}"
    run_pg(
        [
            str(bindir / "pg_ctl"),
            "start",
            f"--pgdata={layout.pgdata}",
            f"--log={layout.pg_log}",
            "--wait",
            "--timeout=60",
            f"--options={options}",
        ],
        "starting PostgreSQL",
        layout.pg_log,
    )


def psql(layout: Layout, bindir: Path, sql: str) -> str:
    return run_pg(
        [
            str(bindir / "psql"),
            f"--host={layout.socket_dir}",
            f"--port={PG_PORT}",
            f"--username={SUPERUSER}",
            "--dbname=postgres",
            "--no-psqlrc",
            "--tuples-only",
            "--no-align",
            "--set=ON_ERROR_STOP=1",
        ],
        "psql",
        layout.pg_log,
        stdin=sql,  # not on the command line, where `ps` shows a password to every user
    ).strip()


def create_database(layout: Layout, bindir: Path, name: str = DATABASE) -> None:
    if psql(layout, bindir, f"SELECT 1 FROM pg_database WHERE datname = '{name}'") == "1":
        return
    psql(layout, bindir, f"CREATE DATABASE {name}")


def secure(layout: Layout, bindir: Path) -> None:
    """--secure: secrets made or reused; the password set while the socket trusts, then asked."""
    if layout.root.stat().st_uid == os.getuid():  # 0711 as root: the postgres user goes through
        layout.root.chmod(0o711 if running_as_root() else 0o700)
    os.environ.update(tracking_secure.server_env(layout.root))  # psql and the MLflow server
    create_database(layout, bindir, tracking_secure.AUTH_DATABASE)  # MLflow's users
    auth_uri = layout.backend_uri(tracking_secure.AUTH_DATABASE)
    pg = tracking_secure.write_secrets(layout.root, layout.socket_dir, PG_PORT, SUPERUSER, auth_uri)
    give_to_postgres(tracking_secure.pgpass(layout.root))  # its psql reads it too (0600)
    hba = layout.pgdata / "pg_hba.conf"
    if (asking := tracking_secure.scram_hba(hba.read_text())) != hba.read_text():
        verifier = tracking_secure.scram_verifier(pg)
        psql(layout, bindir, f"ALTER ROLE {SUPERUSER} PASSWORD '{verifier}'")
        hba.write_text(asking)
        reload = [str(bindir / "pg_ctl"), "reload", f"--pgdata={layout.pgdata}"]
        run_pg(reload, "reloading PostgreSQL", layout.pg_log)


def stop_postgres(layout: Layout, bindir: Path) -> bool:
    if not postgres_running(layout, bindir):
        return False
    # fast: roll back open transactions and close sessions now, rather than wait for clients.
    run_pg(
        [str(bindir / "pg_ctl"), "stop", f"--pgdata={layout.pgdata}", "--mode=fast", "--wait"],
        "stopping PostgreSQL",
        layout.pg_log,
    )
    return True


# ---- MLflow -------------------------------------------------------------------------------


def check_python_packages(secure: bool) -> None:
    if importlib.util.find_spec("mlflow") is None:
        raise ServerError(f"mlflow is not installed in {sys.executable}: pip install -e .")
    if importlib.util.find_spec("psycopg2") is None:
        raise ServerError(
            f"psycopg2 (MLflow's PostgreSQL driver) is not installed in {sys.executable}: "
            "pip install -e '.[cluster]' (or pip install psycopg2-binary)"
        )
    if secure and importlib.util.find_spec("flask_wtf") is None:
        raise ServerError(
            f"Flask-WTF (MLflow's basic-auth app needs it) is not installed in {sys.executable}: "
            "pip install -e . (or pip install 'mlflow[auth]')"
        )


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ServerError(
                    f"port {port} on {host} is in use: pick another with --port "
                    f"(`ss -ltnp 'sport = :{port}'` shows what holds it)"
                ) from None
            raise ServerError(f"cannot listen on {host}:{port}: {err.strerror}") from None


def mlflow_pid(layout: Layout) -> int | None:
    """The running server's pid, or None; a stale pid file (a reused pid) is not trusted."""
    try:
        pid = int(layout.pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists() and b"mlflow" not in cmdline.read_bytes():
        return None
    return pid


def public_url(host: str, port: int) -> str:
    """The address to hand to clients: a wildcard bind is reached through this host's name."""
    name = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"


def local_url(host: str, port: int) -> str:
    """Where this machine reaches the server to check that it answers."""
    return public_url("127.0.0.1" if host in ("0.0.0.0", "") else host, port)


def allowed_hosts(host: str) -> str:
    """MLflow refuses requests whose Host header is neither local nor a private IP (DNS
    rebinding guard), so clients using this machine's name would get 403: allow its names."""
    names = {"localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}
    if host not in ("0.0.0.0", "::", ""):
        names.add(host)
    private = ["10.*", "192.168.*", *(f"172.{i}.*" for i in range(16, 32))]
    return ",".join([*sorted(n for name in names for n in (name, f"{name}:*")), *private])


def start_mlflow(
    layout: Layout, host: str, port: int, workers: int, secure: bool
) -> subprocess.Popen:
    cmd = [
        sys.executable,  # the interpreter whose packages were checked
        "-m",
        "mlflow",
        "server",
        f"--backend-store-uri={layout.backend_uri()}",
        f"--artifacts-destination={layout.artifacts}",
        f"--host={host}",
        f"--port={port}",
        f"--workers={workers}",
        f"--allowed-hosts={allowed_hosts(host)}",
        *(["--app-name=basic-auth"] if secure else []),  # the login: MLflow's users (admin)
    ]
    # Its job runner (seven huey processes, for GenAI scorers and trace roll-ups) would serve
    # nothing this project logs, and slows starting and stopping on a small node.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with layout.mlflow_log.open("ab") as log:
        # A session of its own: it outlives this command and stops as one process group.
        server = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=layout.root,
            env=env,
            start_new_session=True,
        )
    layout.pid_file.write_text(f"{server.pid}\n")
    layout.url_file.write_text(public_url(host, port) + "\n")
    return server


def answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def wait_until_answering(layout: Layout, server: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ServerError(
                f"mlflow server exited: {last_line(layout.mlflow_log)}; see {layout.mlflow_log}"
            )
        if answers(url):
            return
        time.sleep(0.5)
    stop_mlflow(layout)
    raise ServerError(
        f"mlflow server did not answer {url}/health within {HEALTH_TIMEOUT_S} s; "
        f"see {layout.mlflow_log}"
    )


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def stop_mlflow(layout: Layout) -> bool:
    pid = mlflow_pid(layout)
    if pid is None:
        layout.pid_file.unlink(missing_ok=True)
        return False
    # The pid leads its own process group (start_new_session): this reaches its workers too.
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.2)
    if _group_alive(pid):
        os.killpg(pid, signal.SIGKILL)
    layout.pid_file.unlink(missing_ok=True)
    return True


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs; zombies, which wait for whoever reaps the
    detached server, do not count."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # After the parenthesised command name: state, ppid, pgrp.
            state, _, pgrp = stat.read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(pgrp) == pgid and state != "Z":
            return True
    return False


# ---- commands -----------------------------------------------------------------------------


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_start(args: argparse.Namespace) -> int:
    layout = Layout(args.root.resolve(), args.artifacts and args.artifacts.resolve())
    pid = mlflow_pid(layout)
    # A --secure root stays one: its database asks a password only --secure gives. A plain
    # root becomes one when started with --secure (its runs then visible to the admin alone).
    if tracking_secure.made_secure(layout.root) and not args.secure:
        raise ServerError(f"{args.root} was started with --secure: start it with --secure again")
    if pid is not None and args.secure and not tracking_secure.made_secure(layout.root):
        raise ServerError(f"runs without --secure (pid {pid}): stop it, then start --secure")
    login = tracking_secure.credentials(layout.root)
    login_line = f"login for jobs in {login}: export $(cat {login})"
    if pid is not None:
        url = layout.url_file.read_text().strip()
        say(
            f"already running (pid {pid}); `{Path(__file__).name} stop --root {args.root}` first "
            "to restart"
        )
        if args.secure:
            say(login_line)
        print(f"MLFLOW_TRACKING_URI={url}")
        return 0
    check_python_packages(args.secure)
    bindir = pg_bindir()
    check_port_free(args.host, args.port)
    prepare_dirs(layout)
    init_database_cluster(layout, bindir)
    start_postgres(layout, bindir)
    if args.secure:
        secure(layout, bindir)
    create_database(layout, bindir)
    server = start_mlflow(layout, args.host, args.port, args.workers, args.secure)
    wait_until_answering(layout, server, local_url(args.host, args.port))
    url = public_url(args.host, args.port)
    say(
        f"MLflow server {url} (pid {server.pid}): runs in PostgreSQL {layout.pgdata}, "
        f"artifacts in {layout.artifacts}, log {layout.mlflow_log}"
    )
    if args.secure:
        say(login_line)
    print(f"MLFLOW_TRACKING_URI={url}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    layout = Layout(args.root.resolve())
    say("mlflow server: stopped" if stop_mlflow(layout) else "mlflow server: was not running")
    bindir = pg_bindir()
    say("PostgreSQL: stopped" if stop_postgres(layout, bindir) else "PostgreSQL: was not running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 when both run and the server answers, else 3 (as LSB init scripts do)."""
    layout = Layout(args.root.resolve())
    pg_up = postgres_running(layout, pg_bindir())
    print(f"PostgreSQL: {'running' if pg_up else 'not running'} ({layout.pgdata})")
    pid = mlflow_pid(layout)
    if pid is None:
        print("mlflow server: not running")
        return 3
    url = layout.url_file.read_text().strip()
    ok = answers(url) or answers(local_url("127.0.0.1", int(url.rsplit(":", 1)[1])))
    print(f"mlflow server: pid {pid}, {url} {'answers' if ok else 'does not answer'}")
    return 0 if pg_up and ok else 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "start": (cmd_start, "start PostgreSQL and the MLflow server; print the URI to export"),
        "stop": (cmd_stop, "stop both"),
        "status": (cmd_status, "say what runs (exit 0 when the server answers, else 3)"),
    }
    for name, (func, summary) in commands.items():
        p = sub.add_parser(name, help=summary)
        p.add_argument(
            "--root",
            type=Path,
            required=True,
            help="holds the database, its socket, the artifacts, logs and pid file",
        )
        p.set_defaults(func=func)
        if name == "start":
            p.add_argument(
                "--host",
                default="127.0.0.1",
                help="interface to listen on: 0.0.0.0 for compute nodes to reach it",
            )
            p.add_argument("--port", type=int, default=5000, help="the MLflow server's port")
            p.add_argument("--workers", type=int, default=4, help="MLflow server processes")
            p.add_argument(
                "--secure",
                action="store_true",
                help="a login on the MLflow server and a password on the database, generated "
                "into ROOT/credentials (export $(cat ROOT/credentials) for jobs)",
            )
            p.add_argument(
                "--artifacts",
                type=Path,
                help="where the server stores artifacts (default ROOT/artifacts; keep it the "
                "same across restarts): e.g. on the shared file system, with ROOT on a local disk",
            )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return args.func(args)
    except ServerError as err:
        print(f"tracking_server.py {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
