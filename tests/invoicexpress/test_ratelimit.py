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
RATE = 10  # per second, i.e. per_minute=600
BURST = 5
START_US = 1_000_000_000_000  # the test clock's start: any time works, the limiter only compares

# fakeredis runs Lua only with lupa, which this venv lacks: a real redis-server it is.
integration = pytest.mark.integration

# The limiter reads time from Redis (TIME) in its scripts and from time.monotonic() / time.sleep() in
# Python. The tests give both a clock that moves only when the test or the limiter's own sleep moves it,
# so what they assert (who got a slot, how long someone waited) holds however busy the machine is.
SERVER_TIME = "redis.call('TIME')"


class Clock:
    """Test time, in whole microseconds: `advance` moves it, the limiter's `sleep` moves it (and is
    recorded). Bound to a Redis connection, it keeps the value the clocked scripts read up to date."""

    def __init__(self, conn=None, name: str | None = None):
        self.now_us = START_US
        self.slept: list[float] = []
        self.conn, self.name = conn, name or f"test-clock:{uuid.uuid4().hex}"
        self._publish()

    def monotonic(self) -> float:
        return self.now_us / 1_000_000

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.now_us += round(seconds * 1_000_000)
        self._publish()

    def _publish(self) -> None:
        if self.conn is not None:
            seconds, micros = divmod(self.now_us, 1_000_000)
            self.conn.hset(self.name, mapping={"s": seconds, "us": micros})


class ClockedRedis:
    """A real Redis connection whose rate-limit scripts read the test clock (the hash `clock_name`)
    instead of the server's TIME; everything else is the limiter's own Lua."""

    def __init__(self, conn, clock_name: str):
        self.conn, self.clock_name = conn, clock_name

    def register_script(self, source: str):
        assert SERVER_TIME in source, "the limiter no longer reads TIME: update the test clock"
        return self.conn.register_script(
            source.replace(SERVER_TIME, f"redis.call('HMGET', '{self.clock_name}', 's', 'us')"))


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


@pytest.fixture
def clock(conn, monkeypatch):
    """The test clock, for the limiter's Python side and (through `limiter`) its scripts."""
    clock = Clock(conn)
    monkeypatch.setattr(ratelimit, "time", clock)
    yield clock
    conn.delete(clock.name)


@pytest.fixture(autouse=True)
def fresh_warning_throttle(monkeypatch):
    monkeypatch.setattr(ratelimit, "_last_warning", float("-inf"))


def limiter(conn, key, clock: Clock, per_minute=600, burst=BURST) -> RateLimiter:
    return RateLimiter(ClockedRedis(conn, clock.name), key, per_minute=per_minute, burst=burst)


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


def server_time_us(conn) -> int:
    server_seconds, micros = conn.time()
    return server_seconds * 1_000_000 + micros


def seconds(value: float):
    return pytest.approx(value, abs=1e-6)


# --- the budget -----------------------------------------------------------------------------------


@integration
def test_back_to_back_requests_get_the_burst_then_one_slot_per_interval(conn, key, clock):
    lim = limiter(conn, key, clock)

    granted_at = []
    for _ in range(BURST + 20):
        lim.acquire(timeout=5)
        granted_at.append(clock.now_us - START_US)

    interval = 1_000_000 // RATE
    assert granted_at == [0] * BURST + [interval * i for i in range(1, 21)]


@integration
def test_threads_sharing_one_limiter_get_the_burst_then_the_rate_between_them(conn, key, clock):
    lim = limiter(conn, key, clock)
    granted: list[int] = []

    def round_of_tries():
        def work():
            granted.append(sum(1 for _ in range(20) if _granted_now(lim)))

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        total = sum(granted)
        granted.clear()
        return total

    assert round_of_tries() == BURST  # 160 tries at one instant: the burst, whoever asks
    assert round_of_tries() == 0
    clock.advance(0.3)
    assert round_of_tries() == 3  # the rate: 0.3 s at 10 a second
    clock.advance(0.5)
    assert round_of_tries() == 5
    clock.advance(60)
    assert round_of_tries() == BURST  # a long idle spell refills the burst, no more


def _granted_now(lim: RateLimiter) -> bool:
    try:
        lim.acquire(timeout=0)
    except RateLimitTimeout:
        return False
    return True


WORKER = """
import sys
import redis
from connector.invoicexpress.ratelimit import RateLimiter, RateLimitTimeout
from tests.invoicexpress.test_ratelimit import ClockedRedis
url, key, clock_name = sys.argv[1:4]
lim = RateLimiter(ClockedRedis(redis.Redis.from_url(url), clock_name), key, per_minute=600, burst=5)
print("ready", flush=True)
for line in sys.stdin:
    granted = 0
    for _ in range(int(line)):
        try:
            lim.acquire(timeout=0)
            granted += 1
        except RateLimitTimeout:
            pass
    print(granted, flush=True)
"""


@integration
def test_processes_with_their_own_limiters_share_one_budget(redis_url, conn, key, clock):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", WORKER, redis_url, key, clock.name]
    workers = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        for _ in range(3)
    ]

    def round_of_tries(tries: int = 20) -> int:
        for worker in workers:  # all of them asking at once, then their answers
            worker.stdin.write(f"{tries}\n")
            worker.stdin.flush()
        return sum(int(worker.stdout.readline()) for worker in workers)

    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        assert round_of_tries() == BURST  # not a burst each: one budget
        clock.advance(0.4)
        assert round_of_tries() == 4  # and one rate: 0.4 s at 10 a second between them
        for worker in workers:
            worker.stdin.close()
            assert worker.wait(timeout=60) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


@integration
def test_two_limiters_on_one_key_share_the_budget(conn, key, clock):
    first, second = limiter(conn, key, clock), limiter(conn, key, clock)

    assert take_all_now(first) == BURST
    with pytest.raises(RateLimitTimeout):
        second.acquire(timeout=0)


@integration
def test_different_accounts_have_their_own_budgets(conn, key, clock):
    other = account_key("https://someone-else.app.invoicexpress.com/" + key)

    assert take_all_now(limiter(conn, key, clock)) == BURST
    assert take_all_now(limiter(conn, other, clock)) == BURST


@integration
def test_acquire_sleeps_until_the_next_slot_and_says_how_long(conn, key, clock):
    lim = limiter(conn, key, clock, per_minute=120, burst=1)  # one every 0.5 s
    assert lim.acquire(timeout=0) == 0

    waited = lim.acquire(timeout=5)

    assert waited == seconds(0.5)
    assert clock.slept == [seconds(0.5)]


@integration
def test_timeout_raises_a_retryable_error_at_once_with_the_wait(conn, key, clock):
    lim = limiter(conn, key, clock, per_minute=6, burst=1)  # one every 10 s
    lim.acquire(timeout=0)

    with pytest.raises(RateLimitTimeout) as caught:
        lim.acquire(timeout=0.5)

    assert clock.slept == []  # it knew it could not make it: no pointless sleep
    assert isinstance(caught.value, RetryableError)
    assert caught.value.retry_after == seconds(10)
    assert caught.value.status is None  # nothing was sent to IX


@integration
def test_a_caller_that_gives_up_takes_nothing(conn, key, clock):
    lim = limiter(conn, key, clock, per_minute=120, burst=1)
    lim.acquire(timeout=0)
    for _ in range(5):
        with pytest.raises(RateLimitTimeout):
            lim.acquire(timeout=0)

    assert lim.acquire(timeout=5) == seconds(0.5)  # the next slot is still the one after the first request


# --- pause ----------------------------------------------------------------------------------------


@integration
def test_pause_makes_other_limiters_wait(conn, key, clock):
    limiter(conn, key, clock).pause(1.0)
    other = limiter(conn, key, clock)

    with pytest.raises(RateLimitTimeout) as caught:
        other.acquire(timeout=0.2)
    assert caught.value.retry_after == seconds(1)

    assert other.acquire(timeout=5) == seconds(1)


@integration
def test_a_shorter_pause_does_not_cut_a_longer_one_short(conn, key, clock):
    lim = limiter(conn, key, clock)
    lim.pause(5)
    lim.pause(0.5)

    with pytest.raises(RateLimitTimeout) as caught:
        lim.acquire(timeout=1)
    assert caught.value.retry_after == seconds(5)


@integration
def test_after_a_pause_requests_resume_one_interval_apart(conn, key, clock):
    lim = limiter(conn, key, clock)
    lim.pause(0.3)

    assert lim.acquire(timeout=5) == seconds(0.3)
    assert take_all_now(lim) == 0  # no burst straight after a 429
    assert lim.acquire(timeout=5) == seconds(1 / RATE)


@integration
def test_pause_is_capped(conn, key, clock):
    lim = limiter(conn, key, clock)
    lim.pause(86400)

    with pytest.raises(RateLimitTimeout) as caught:
        lim.acquire(timeout=1)
    assert caught.value.retry_after == seconds(ratelimit.MAX_PAUSE_SECONDS)


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
    lim = RateLimiter(conn, key, per_minute=6, burst=BURST)  # the server's own clock; one every 10 s

    before = server_time_us(conn)
    lim.acquire(timeout=0)
    after = server_time_us(conn)

    assert lim.key == f"connector:ix-rate:{key}"
    # The theoretical arrival time is on the server's clock: one interval past its now at the grant.
    assert before + 10_000_000 <= int(conn.hget(lim.key, "tat")) <= after + 10_000_000
    # Idle accounts leave nothing behind: the key lives until its state means "idle" anyway, plus 1 s.
    assert 0 < conn.pttl(lim.key) <= 11_000
    stored = repr(conn.hgetall(lim.key)) + lim.key
    assert "acme" not in stored and api_key not in stored


@integration
def test_an_idle_account_leaves_no_key(conn, key):
    lim = RateLimiter(conn, key, per_minute=6000, burst=1)  # the server's clock and expiry; 10 ms interval
    lim.acquire(timeout=0)
    lim.pause(0.05)

    time.sleep(1.3)  # at least this long: the key's 1.05 s to live have passed, however slow the machine

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


def test_redis_down_lets_requests_through_and_warns_once_a_minute(caplog, monkeypatch):
    # No retries in this client, so the test is quick; the app's client retries, see the next test.
    down = redis.Redis(
        host="127.0.0.1", port=services.free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    clock = Clock()
    monkeypatch.setattr(ratelimit, "time", clock)
    lim = RateLimiter(down, "acct", per_minute=6, burst=1)

    with caplog.at_level(logging.WARNING, logger=ratelimit.__name__):
        for _ in range(3):
            assert lim.acquire(timeout=30) == 0
        lim.pause(10)  # nor does a pause fail
        other = RateLimiter(down, "acct", per_minute=6, burst=1)
        assert other.acquire(timeout=30) == 0
    assert clock.slept == []  # nobody waited for a budget nobody can count

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
def test_redis_going_away_midway_does_not_block(tmp_path, caplog, monkeypatch):
    server = services.start_redis(tmp_path)
    try:
        conn = redis.Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=1)
        clock = Clock(conn)
        monkeypatch.setattr(ratelimit, "time", clock)
        lim = limiter(conn, "acct", clock, per_minute=6, burst=1)
        lim.acquire(timeout=0)
        with pytest.raises(RateLimitTimeout):
            lim.acquire(timeout=0)

        server.stop()
        with caplog.at_level(logging.WARNING, logger=ratelimit.__name__):
            assert lim.acquire(timeout=30) == 0
        assert clock.slept == []
        assert any("Redis unavailable" in r.getMessage() for r in caplog.records)
    finally:
        server.close()


# --- with the client ------------------------------------------------------------------------------


@integration
def test_a_429_seen_by_one_worker_holds_back_the_others(conn, clock):
    import responses

    from connector.invoicexpress.client import Client

    base = f"https://acct-{uuid.uuid4().hex}.app.invoicexpress.com"
    one = Client(base, "key-one", limiter=limiter(conn, account_key(base), clock))
    other = limiter(conn, account_key(base), clock)  # another worker, its own connection state
    with responses.RequestsMock() as ix:
        ix.get(f"{base}/taxes.json", body="", status=429, headers={"Retry-After": "1"})
        with pytest.raises(RetryableError):
            one.list_taxes()

    with pytest.raises(RateLimitTimeout) as caught:
        other.acquire(timeout=0.3)
    assert caught.value.retry_after == seconds(1)
    assert other.acquire(timeout=5) == seconds(1)
