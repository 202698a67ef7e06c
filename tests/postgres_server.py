"""A throwaway PostgreSQL server for tests: started in a temporary folder, removed afterwards.

``running_server()`` runs ``initdb`` (trust authentication, which the generated ``pg_hba.conf``
grants only to the unix socket and the loopback addresses), starts the server with
``pg_ctl start -w`` listening on 127.0.0.1 at a free port and on a unix socket inside the
folder, creates one database and yields a :class:`Server` whose ``url`` SQLAlchemy, psycopg2
and Optuna's ``RDBStorage`` open. On leaving, however the tests ended, it stops the server
(``pg_ctl stop -m fast``) and deletes the folder.

Under pytest-xdist every worker process starts its own server: each has its own folder
(``tempfile.mkdtemp``) and its own port, so two workers never share a data directory. A port
taken between choosing it and the server binding it is retried with another port.

``initdb`` refuses to run as root, so when the tests run as root the server commands run as the
``postgres`` system user (``runuser -u postgres --``), which owns the folder.

Debian installs the binaries in ``/usr/lib/postgresql/<major>/bin`` and puts only the client
programs on PATH, so both places are searched.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from workbench.browser import free_port

SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")
SUPERUSER = "postgres"  # the bootstrap role initdb creates (-U), whoever runs the server
SERVICE_USER = "postgres"  # the system account that runs the server when we are root
DATABASE = "workbench"
INSTALL_HINT = "install Debian's `postgresql` package (`apt-get install -y postgresql`)"
START_TIMEOUT_S = 60
PORT_ATTEMPTS = 3


class ServerUnavailable(RuntimeError):
    """PostgreSQL cannot be used here at all (nothing installed): tests should skip."""


class ServerFailed(RuntimeError):
    """PostgreSQL is installed but did not work: tests should fail, with the log."""


@dataclass(frozen=True)
class Server:
    """A running throwaway server; ``url`` names its database ``DATABASE``."""

    bindir: Path
    root: Path
    port: int
    version: str

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL of ``database``, naming the psycopg2 driver.

        SQLAlchemy 2.1 takes a bare ``postgresql://`` to mean psycopg 3, which is not what the
        ``postgres`` extra installs, so the driver is named.
        """
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for(DATABASE)

    def create_database(self, name: str) -> str:
        """Create another empty database on this server and return its URL."""
        import psycopg2
        from psycopg2 import sql

        connection = psycopg2.connect(libpq_dsn(self.url_for("postgres")))
        try:
            connection.autocommit = True  # CREATE DATABASE refuses to run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            connection.close()
        return self.url_for(name)


def libpq_dsn(url: str) -> str:
    """The same URL for psycopg2.connect / libpq, which do not know SQLAlchemy's driver part."""
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres together: PATH first, then Debian's."""
    on_path = shutil.which("initdb")
    candidates = [Path(os.path.realpath(on_path)).parent] if on_path else []
    # Newest major version first: /usr/lib/postgresql/15/bin before .../9.6/bin.
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    debian.sort(key=lambda p: _version_key(Path(p).parent.name), reverse=True)
    candidates += [Path(p) for p in debian]
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in SERVER_PROGRAMS):
            return folder
    return None


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def missing_reason() -> str | None:
    """Why no server can be started here (what is missing and how to get it), or None."""
    if find_bindir() is None:
        return (f"PostgreSQL server not available: {', '.join(SERVER_PROGRAMS)} are neither on "
                f"PATH nor in /usr/lib/postgresql/*/bin; {INSTALL_HINT}")
    try:
        import psycopg2  # noqa: F401
    except ImportError as error:
        return (f"PostgreSQL server not available: psycopg2 is not importable ({error}); "
                "`pip install psycopg2-binary` (the `postgres` extra)")
    return None


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", SERVICE_USER, "--", *command]


def _run(command: list[str], root: Path) -> subprocess.CompletedProcess:
    # cwd = root: the service user may not be allowed into the caller's working folder.
    return subprocess.run(_as_server_user(command), cwd=root, capture_output=True, text=True,
                          check=False, timeout=START_TIMEOUT_S + 30)


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(no server log: {error})"


def _make_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="wb-pg-"))
    (root / "socket").mkdir()
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            shutil.rmtree(root)
            raise ServerFailed(
                f"running as root, PostgreSQL needs the `{SERVICE_USER}` system user to run "
                f"the server (initdb refuses root) and there is none; {INSTALL_HINT}, which "
                "creates it") from None
        for path in (root, root / "socket"):
            os.chown(path, account.pw_uid, account.pw_gid)
    return root


def _initdb(bindir: Path, root: Path) -> None:
    done = _run([str(bindir / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER,
                 "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"], root)
    if done.returncode != 0:
        raise ServerFailed(f"initdb failed (exit {done.returncode}):\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")


def _start(bindir: Path, root: Path) -> int:
    """Start the server on a free port; return the port (a port lost to a race is retried)."""
    log = root / "server.log"
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        # fsync off: a throwaway database does not need to survive a power cut, and it makes
        # every commit much cheaper on a busy disk.
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c fsync=off "
                   f"-c unix_socket_directories={root / 'socket'}")
        done = _run([str(bindir / "pg_ctl"), "start", "-w", "-t", str(START_TIMEOUT_S),
                     "-D", str(root / "data"), "-l", str(log), "-o", options], root)
        if done.returncode == 0:
            return port
        tail = _log_tail(log)
        if "could not bind" not in tail and "already in use" not in tail:
            break
    raise ServerFailed(f"pg_ctl start failed (exit {done.returncode}): {done.stderr.strip()}\n"
                       f"server log ({log}), last lines:\n{tail}")


def _stop(bindir: Path, root: Path) -> None:
    if not (root / "data" / "postmaster.pid").exists():
        return
    done = _run([str(bindir / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(root / "data")],
                root)
    if done.returncode != 0:  # a stuck server must not outlive the tests
        _run([str(bindir / "pg_ctl"), "stop", "-w", "-m", "immediate", "-D",
              str(root / "data")], root)


def _server_version(bindir: Path) -> str:
    done = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


@contextlib.contextmanager
def running_server() -> Iterator[Server]:
    """Start a throwaway server with database ``DATABASE``; stop it and delete it on exit.

    Raises ServerUnavailable when PostgreSQL or psycopg2 is not installed (callers skip) and
    ServerFailed, carrying the server log's last lines, when it is installed but does not start.
    """
    reason = missing_reason()
    if reason:
        raise ServerUnavailable(reason)
    bindir = find_bindir()
    root = _make_root()
    try:
        _initdb(bindir, root)
        try:    # from here a server may be up, even half up after a failed start: stop it
            port = _start(bindir, root)
            server = Server(bindir=bindir, root=root, port=port,
                            version=_server_version(bindir))
            server.create_database(DATABASE)
            yield server
        finally:
            _stop(bindir, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
