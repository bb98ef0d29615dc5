"""The integration harness itself: real PostgreSQL, Redis and process-group handling."""

from __future__ import annotations

import os
import signal
import sys
import textwrap

import pytest
import redis
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tests.integration import services


def _engine(url):
    # NullPool: every statement below gets a fresh connection, like an app reconnecting after an outage.
    return create_engine(url, poolclass=NullPool)


def test_tests_here_are_marked_integration(request):
    assert request.node.get_closest_marker("integration") is not None


def test_postgres_listens_on_loopback_only(postgres, clean_db):
    with _engine(clean_db).connect() as conn:
        assert conn.execute(text("SELECT current_database()")).scalar() == "connector"
        if getattr(postgres, "managed", True):
            assert conn.execute(text("SHOW listen_addresses")).scalar() == "127.0.0.1"
            assert conn.execute(text("SHOW fsync")).scalar() == "off"
    assert clean_db.startswith("postgresql+psycopg://postgres@127.0.0.1:")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_survives_stop_and_start(postgres, clean_db, mode):
    engine = _engine(clean_db)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE invoices (id serial PRIMARY KEY, number text NOT NULL)"))
        conn.execute(text("INSERT INTO invoices (number) VALUES ('FT 2026/1'), ('FT 2026/2')"))

    postgres.stop(mode=mode)
    assert not services.port_open(postgres.port)
    with pytest.raises(OperationalError):
        engine.connect().close()

    postgres.start()
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT number FROM invoices ORDER BY id")).scalars().all()
    assert rows == ["FT 2026/1", "FT 2026/2"]
    assert postgres.url == clean_db  # same port after the restart


def test_clean_db_fixture_leaves_an_empty_schema(clean_db):
    assert inspect(_engine(clean_db)).get_table_names() == []


def test_reset_schema_drops_tables_types_and_sequences(clean_db):
    engine = _engine(clean_db)
    with engine.begin() as conn:
        conn.execute(text("CREATE TYPE job_state AS ENUM ('queued', 'done')"))
        conn.execute(text("CREATE TABLE jobs (id serial PRIMARY KEY, state job_state)"))
    services.reset_schema(clean_db)
    with engine.begin() as conn:
        assert inspect(conn).get_table_names() == []
        # Recreating proves the type and the sequence went too.
        conn.execute(text("CREATE TYPE job_state AS ENUM ('queued')"))
        conn.execute(text("CREATE TABLE jobs (id serial PRIMARY KEY, state job_state)"))


def test_redis_set_get_and_restart_without_persistence(redis_server, clean_redis):
    client = redis.Redis.from_url(clean_redis, socket_timeout=2)
    client.set("webhook:1", "seen")
    assert client.get("webhook:1") == b"seen"
    if getattr(redis_server, "managed", True):
        assert client.config_get("save")["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"
        assert client.config_get("bind")["bind"] == "127.0.0.1"

    redis_server.stop()
    assert not services.port_open(redis_server.port)
    with pytest.raises(redis.ConnectionError):
        client.ping()

    redis_server.start()
    assert redis_server.url == clean_redis
    assert client.ping()
    # No RDB/AOF: a restart is also a wipe, which outage tests must account for.
    assert client.get("webhook:1") is None
    client.set("webhook:2", "seen")
    assert client.get("webhook:2") == b"seen"


def test_clean_redis_flushes(clean_redis):
    assert redis.Redis.from_url(clean_redis).dbsize() == 0


# A parent that serves HTTP and has a long-running child, like gunicorn's master and workers.
PARENT_WITH_CHILD = textwrap.dedent(
    """
    import http.server, os, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"child={child.pid} cwd={os.getcwd()} greeting={os.environ.get('GREETING')}", flush=True)
    server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)
    print("serving", flush=True)
    server.serve_forever()
    """
)


def test_proc_waits_and_sigkill_takes_children_down(procs, tmp_path):
    port = services.free_port()
    proc = procs("parent", [sys.executable, "-c", PARENT_WITH_CHILD, str(port)], env={"GREETING": "olá"})
    match = proc.wait_for_log(r"child=(\d+) cwd=(\S+) greeting=(\S+)", timeout=10)
    child = int(match.group(1))
    assert match.group(2) == str(services.REPO_ROOT)
    assert match.group(3) == "olá"
    proc.wait_for_log("^serving$", timeout=10)
    assert proc.wait_for_http(f"http://127.0.0.1:{port}/", timeout=10) == 200
    assert services.pid_alive(child) and child in services.group_members(proc.pgid)
    assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)

    proc.kill(signal.SIGKILL)

    assert proc.returncode == -signal.SIGKILL
    assert not services.pid_alive(proc.pid)
    assert not services.pid_alive(child)
    assert not proc.group_alive()
    assert not services.port_open(port)


def test_proc_terminate_is_graceful_then_forceful(procs):
    graceful = procs(
        "graceful",
        [sys.executable, "-c", "import signal, sys, time\n"
         "signal.signal(signal.SIGTERM, lambda *a: (print('bye'), sys.exit(0)))\n"
         "print('up'); time.sleep(600)"],
    )  # fmt: skip
    stubborn = procs(
        "stubborn",
        [sys.executable, "-c", "import signal, time\n"
         "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
         "print('up'); time.sleep(600)"],
    )  # fmt: skip
    graceful.wait_for_log("^up$")
    stubborn.wait_for_log("^up$")

    assert graceful.terminate(timeout=10) == 0
    assert "bye" in graceful.output()
    assert stubborn.terminate(timeout=0.5) == -signal.SIGKILL
    assert not stubborn.group_alive()


def test_proc_wait_helpers_report_early_exit_with_output(procs):
    proc = procs("crasher", [sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"])
    with pytest.raises(RuntimeError, match="boom: bad config"):
        proc.wait_for_log("never printed", timeout=10)
    assert proc.wait() == 3
    with pytest.raises(RuntimeError, match="exited before serving"):
        proc.wait_for_http(f"http://127.0.0.1:{services.free_port()}/", timeout=5)


def test_proc_wait_for_log_since_only_matches_new_output(procs):
    proc = procs(
        "ticker",
        [sys.executable, "-c", "import signal\n"
         "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
         "print('tick 1', flush=True)\n"
         "signal.sigwait({signal.SIGUSR1})\n"
         "print('tick 2', flush=True)"],
    )  # fmt: skip
    proc.wait_for_log("tick 1")
    mark = proc.mark()
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait_for_log(r"tick \d", since=mark).group(0) == "tick 2"


def test_free_port_is_bindable_on_loopback():
    import socket

    port = services.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_missing_postgres_binaries_give_an_install_hint(monkeypatch, tmp_path):
    monkeypatch.delenv("PG_BINDIR", raising=False)
    with pytest.raises(RuntimeError, match=r"initdb, pg_ctl.*apt-get install postgresql"):
        services.find_postgres_bindir(path=str(tmp_path), globs=(str(tmp_path / "postgresql/*/bin"),))


@pytest.mark.skipif(bool(os.environ.get("TEST_DATABASE_URL")), reason="external PostgreSQL in use")
def test_postgres_binaries_are_found():
    bindir = services.find_postgres_bindir()
    assert (bindir / "pg_ctl").exists()
