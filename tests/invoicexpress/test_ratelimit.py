"""The shared IX rate limit: GCRA in Redis holds every worker to one budget per account, pauses on 429."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from connector.invoicexpress import ratelimit
from connector.invoicexpress.client import RetryableError
from connector.invoicexpress.ratelimit import KEY_PREFIX, RateLimiter, RateLimitTimeout, account_key
from tests.integration import services

ROOT = Path(__file__).resolve().parents[2]
RATE = 10.0  # per second, i.e. per_minute=600
BURST = 5
# Scheduling, the Redis round trip and the gap between the server's grant and our clock reading.
SLACK = 1

# fakeredis runs Lua only with lupa, which this venv lacks: a real redis-server it is.
integration = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    external = os.environ.get("TEST_REDIS_URL")
    if external:
        yield external
        return
    server = services.start_redis(tmp_path_factory.mktemp("ratelimit-redis"))
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def conn(redis_url):
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def key():
    """A fresh account per test, so tests never share a budget (and no FLUSHALL on a shared server)."""
    return account_key(f"https://acct-{uuid.uuid4().hex}.app.invoicexpress.com")


@pytest.fixture(autouse=True)
def fresh_warning_throttle(monkeypatch):
    monkeypatch.setattr(ratelimit, "_last_warning", float("-inf"))


def limiter(conn, key, per_minute=600, burst=BURST) -> RateLimiter:
    return RateLimiter(conn, key, per_minute=per_minute, burst=burst)


def take_all_now(lim: RateLimiter) -> int:
    """How many requests go through without waiting."""
    taken = 0
    while True:
        try:
            lim.acquire(timeout=0)
        except RateLimitTimeout:
            return taken
        taken += 1
        assert taken < 1000


def assert_within_rate(stamps: list[float], rate: float = RATE, burst: int = BURST) -> None:
    """No window between two grants holds more than burst + rate x its length (GCRA's promise)."""
    stamps = sorted(stamps)
    for i in range(len(stamps)):
        for j in range(i, len(stamps)):
            allowed = burst + rate * (stamps[j] - stamps[i]) + SLACK
            assert j - i + 1 <= allowed, f"{j - i + 1} requests in {stamps[j] - stamps[i]:.3f} s"


# --- the budget -----------------------------------------------------------------------------------


@integration
def test_threads_sharing_one_limiter_stay_within_burst_plus_rate(conn, key):
    lim = limiter(conn, key)
    window = 2.0
    stamps: list[float] = []
    lock = threading.Lock()
    start = time.monotonic()

    def work():
        while True:
            lim.acquire(timeout=5)
            now = time.monotonic()
            if now - start > window:
                return
            with lock:
                stamps.append(now)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)

    elapsed = max(stamps) - start
    assert len(stamps) <= BURST + RATE * elapsed + SLACK
    assert_within_rate(stamps)
    # And it does run at the limit, not somewhere under it.
    assert len(stamps) >= 0.8 * (BURST + RATE * elapsed)


WORKER = """
import sys, time
import redis
from connector.invoicexpress.ratelimit import RateLimiter
url, key, window = sys.argv[1], sys.argv[2], float(sys.argv[3])
lim = RateLimiter(redis.Redis.from_url(url), key, per_minute=600, burst=5)
print("ready", flush=True)
start = float(sys.stdin.readline())
while time.monotonic() < start:
    time.sleep(0.001)
while True:
    lim.acquire(timeout=5)
    now = time.monotonic()
    if now - start > window:
        break
    print(now, flush=True)
"""


@integration
def test_processes_with_their_own_limiters_share_one_budget(redis_url, key):
    # CLOCK_MONOTONIC is system-wide on Linux, so the processes' stamps are comparable.
    window = 1.5
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", WORKER, redis_url, key, repr(window)]
    workers = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        for _ in range(3)
    ]
    try:
        # The window opens only once every interpreter is up, however slow the machine is.
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        start = time.monotonic() + 0.05
        outputs = []
        for worker in workers:
            worker.stdin.write(f"{start!r}\n")
            worker.stdin.flush()
        for worker in workers:
            out, _ = worker.communicate(timeout=20)
            assert worker.returncode == 0
            outputs.append([float(line) for line in out.split()])
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    stamps = [stamp for out in outputs for stamp in out]
    assert sum(1 for out in outputs if out) >= 2, "the budget should be shared, not taken by one process"
    assert len(stamps) <= BURST + RATE * window + SLACK
    assert_within_rate(stamps)


@integration
def test_two_limiters_on_one_key_share_the_budget(conn, key):
    first, second = limiter(conn, key), limiter(conn, key)

    assert take_all_now(first) == BURST
    with pytest.raises(RateLimitTimeout):
        second.acquire(timeout=0)


@integration
def test_different_accounts_have_their_own_budgets(conn, key):
    other = account_key("https://someone-else.app.invoicexpress.com/" + key)

    assert take_all_now(limiter(conn, key)) == BURST
    assert take_all_now(limiter(conn, other)) == BURST


@integration
def test_acquire_sleeps_until_the_next_slot_and_says_how_long(conn, key):
    lim = limiter(conn, key, per_minute=120, burst=1)  # one every 0.5 s
    assert lim.acquire(timeout=0) < 0.1

    waited = lim.acquire(timeout=5)

    assert 0.4 <= waited <= 0.7


@integration
def test_timeout_raises_a_retryable_error_at_once_with_the_wait(conn, key):
    lim = limiter(conn, key, per_minute=6, burst=1)  # one every 10 s
    lim.acquire(timeout=0)

    started = time.monotonic()
    with pytest.raises(RateLimitTimeout) as caught:
        lim.acquire(timeout=0.5)

    assert time.monotonic() - started < 0.3  # it knew it could not make it: no pointless sleep
    assert isinstance(caught.value, RetryableError)
    assert 9 <= caught.value.retry_after <= 10
    assert caught.value.status is None  # nothing was sent to IX


@integration
def test_a_caller_that_gives_up_takes_nothing(conn, key):
    lim = limiter(conn, key, per_minute=120, burst=1)
    lim.acquire(timeout=0)
    for _ in range(5):
        with pytest.raises(RateLimitTimeout):
            lim.acquire(timeout=0)

    assert lim.acquire(timeout=5) <= 0.6  # the next slot is still the one after the first request


# --- pause ----------------------------------------------------------------------------------------


@integration
def test_pause_makes_other_limiters_wait(conn, key):
    limiter(conn, key).pause(1.0)
    other = limiter(conn, key)

    with pytest.raises(RateLimitTimeout) as caught:
        other.acquire(timeout=0.2)
    assert 0.7 <= caught.value.retry_after <= 1.0

    waited = other.acquire(timeout=5)
    assert 0.7 <= waited <= 1.3


@integration
def test_a_shorter_pause_does_not_cut_a_longer_one_short(conn, key):
    lim = limiter(conn, key)
    lim.pause(5)
    lim.pause(0.5)

    with pytest.raises(RateLimitTimeout) as caught:
        lim.acquire(timeout=1)
    assert caught.value.retry_after > 4


@integration
def test_after_a_pause_requests_resume_one_interval_apart(conn, key):
    lim = limiter(conn, key)
    lim.pause(0.3)

    lim.acquire(timeout=5)
    assert take_all_now(lim) == 0  # no burst straight after a 429
    assert 0.05 <= lim.acquire(timeout=5) <= 0.2


@integration
def test_pause_is_capped(conn, key):
    lim = limiter(conn, key)
    lim.pause(86400)

    with pytest.raises(RateLimitTimeout) as caught:
        lim.acquire(timeout=1)
    assert caught.value.retry_after <= ratelimit.MAX_PAUSE_SECONDS


@pytest.mark.parametrize("seconds", [0, -3, float("nan")])
def test_pause_of_nothing_touches_nothing(seconds):
    class NoRedis:
        def register_script(self, source):
            def run(**kwargs):
                raise AssertionError("no call expected")

            return run

    RateLimiter(NoRedis(), "acct").pause(seconds)


# --- what is kept in Redis ------------------------------------------------------------------------


@integration
def test_state_lives_under_the_account_hash_with_server_time_and_expires(conn):
    base_url, api_key = "https://acme.app.invoicexpress.com", "the-api-key-12345"
    key = account_key(base_url)
    conn.delete(KEY_PREFIX + key)
    lim = limiter(conn, key)

    lim.acquire(timeout=0)

    assert lim.key == f"connector:ix-rate:{key}"
    tat = int(conn.hget(lim.key, "tat"))
    seconds, micros = conn.time()
    server_now = seconds * 1_000_000 + micros
    # The theoretical arrival time is on the server's clock: one interval (100 ms) past its now.
    assert server_now < tat <= server_now + 100_000
    # Idle accounts leave nothing behind: the key lives until its state means "idle" anyway, plus 1 s.
    assert 0 < conn.pttl(lim.key) <= 1200
    stored = repr(conn.hgetall(lim.key)) + lim.key
    assert "acme" not in stored and api_key not in stored


@integration
def test_an_idle_account_leaves_no_key(conn, key):
    lim = limiter(conn, key, per_minute=6000, burst=1)  # 10 ms interval
    lim.acquire(timeout=0)
    lim.pause(0.05)

    time.sleep(1.3)

    assert not conn.exists(lim.key)


def test_account_key_is_a_stable_hash_of_the_base_url():
    assert account_key("https://acme.app.invoicexpress.com/") == account_key("https://ACME.app.invoicexpress.com")
    assert account_key("https://acme.app.invoicexpress.com") != account_key("https://other.app.invoicexpress.com")
    assert len(account_key("https://acme.app.invoicexpress.com")) == 32
    assert "acme" not in account_key("https://acme.app.invoicexpress.com")


@pytest.mark.parametrize(("per_minute", "burst"), [(0, 5), (-1, 5), (600, 0)])
def test_nonsense_settings_are_refused(per_minute, burst):
    with pytest.raises(ValueError):
        RateLimiter(redis.Redis(), "acct", per_minute=per_minute, burst=burst)


# --- Redis away -----------------------------------------------------------------------------------


def test_redis_down_lets_requests_through_and_warns_once_a_minute(caplog):
    # No retries in this client, so the test is quick; the app's client retries, see the next test.
    down = redis.Redis(
        host="127.0.0.1", port=services.free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    lim = RateLimiter(down, "acct", per_minute=6, burst=1)

    with caplog.at_level(logging.WARNING, logger=ratelimit.__name__):
        started = time.monotonic()
        for _ in range(3):
            assert lim.acquire(timeout=30) < 1
        lim.pause(10)  # nor does a pause fail
        other = RateLimiter(down, "acct", per_minute=6, burst=1)
        assert other.acquire(timeout=30) < 1
        assert time.monotonic() - started < 3

    warnings = [r for r in caplog.records if r.name == ratelimit.__name__ and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Redis unavailable" in warnings[0].getMessage()


class FailingRedis:
    """Stands in for a client whose every call fails (after redis-py's own retries, in real life)."""

    def __init__(self):
        self.calls = 0

    def register_script(self, source):
        def run(keys, args):
            self.calls += 1
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

        return run


def test_after_a_failure_redis_is_left_alone_for_a_while():
    failing = FailingRedis()
    lim = RateLimiter(failing, "acct")

    lim.acquire()
    lim.acquire()
    lim.pause(5)
    assert failing.calls == 1

    lim._redis_down_until = time.monotonic() - 1  # REDIS_RETRY_SECONDS later
    lim.acquire()
    assert failing.calls == 2


def test_the_warning_comes_back_after_a_minute(caplog):
    lim = RateLimiter(FailingRedis(), "acct")

    with caplog.at_level(logging.WARNING, logger=ratelimit.__name__):
        lim.acquire()
        lim._redis_down_until = -math.inf
        lim.acquire()  # within the minute: quiet
        ratelimit._last_warning = time.monotonic() - ratelimit.WARNING_INTERVAL_SECONDS - 1
        lim._redis_down_until = -math.inf
        lim.acquire()

    assert len([r for r in caplog.records if r.name == ratelimit.__name__]) == 2


@integration
def test_redis_going_away_midway_does_not_block(tmp_path, caplog):
    server = services.start_redis(tmp_path)
    try:
        conn = redis.Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=1)
        lim = RateLimiter(conn, "acct", per_minute=6, burst=1)
        lim.acquire(timeout=0)
        with pytest.raises(RateLimitTimeout):
            lim.acquire(timeout=0)

        server.stop()
        with caplog.at_level(logging.WARNING, logger=ratelimit.__name__):
            assert lim.acquire(timeout=30) < 2
        assert any("Redis unavailable" in r.getMessage() for r in caplog.records)
    finally:
        server.close()


# --- with the client ------------------------------------------------------------------------------


@integration
def test_a_429_seen_by_one_worker_holds_back_the_others(conn):
    import responses

    from connector.invoicexpress.client import Client

    base = f"https://acct-{uuid.uuid4().hex}.app.invoicexpress.com"
    one = Client(base, "key-one", limiter=limiter(conn, account_key(base)))
    other = limiter(conn, account_key(base))  # another worker, its own connection state
    with responses.RequestsMock() as ix:
        ix.get(f"{base}/taxes.json", body="", status=429, headers={"Retry-After": "1"})
        with pytest.raises(RetryableError):
            one.list_taxes()

    with pytest.raises(RateLimitTimeout) as caught:
        other.acquire(timeout=0.3)
    assert 0.5 <= caught.value.retry_after <= 1.0
    assert 0.5 <= other.acquire(timeout=5) <= 1.3
