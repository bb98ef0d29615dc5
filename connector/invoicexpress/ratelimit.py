"""One request budget per InvoiceXpress account, shared in Redis by every worker process (GCRA)."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time

from redis.exceptions import RedisError

from connector.invoicexpress.client import RetryableError

logger = logging.getLogger(__name__)

KEY_PREFIX = "connector:ix-rate:"
# A Retry-After far in the future (a bad date, a misconfigured proxy) must not stop every worker for
# hours; after this long the next 429, if any, simply pauses everyone again.
MAX_PAUSE_SECONDS = 300.0
WARNING_INTERVAL_SECONDS = 60.0
# After Redis failed, leave it alone this long: redis-py retries a refused connection with backoff (about
# 4 s with its defaults), and paying that before every IX request would slow issuing to a crawl.
REDIS_RETRY_SECONDS = 10.0

# GCRA keeps one number per account, the theoretical arrival time (TAT): when the next request would be
# due if requests went out exactly one interval apart. A request may go now if TAT - tolerance <= now,
# and then pushes TAT one interval on; tolerance = (burst - 1) intervals lets `burst` go at once after
# an idle spell. Times are microseconds from Redis's own clock (TIME), because workers run on machines
# whose clocks differ, and the check-and-update must be one atomic step, hence Lua.
#
# Numbers are written with %.0f: Lua would otherwise turn them into strings with 14 significant digits,
# which loses the microseconds of a timestamp of 16 digits.
#
# Returns 0 when the caller may send now (TAT advanced), else the microseconds to wait before asking
# again (nothing changed, so a caller that gives up has taken nothing from the others).
_ACQUIRE = """
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tat', 'paused_until')
local paused = tonumber(state[2]) or 0
if paused > now then
  return paused - now
end
local tat = tonumber(state[1]) or now
if tat < now then
  tat = now
end
local allowed_at = tat - tolerance
if allowed_at > now then
  return allowed_at - now
end
tat = tat + interval
redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', tat))
-- Once TAT is in the past the state means "idle", the same as no key at all: let it expire then.
redis.call('PEXPIRE', KEYS[1], math.ceil((tat - now) / 1000) + 1000)
return 0
"""

# Everyone waits until `paused_until` (a pause is only ever lengthened, never cut short by a shorter
# one). TAT is moved to leave no burst at the end of the pause: after a 429 our idea of the budget was
# wrong (another integration may share the account), so workers come back one interval apart.
#
# Returns the microseconds the pause still lasts.
_PAUSE = """
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tolerance = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tat', 'paused_until')
local paused = tonumber(state[2]) or 0
if now + tonumber(ARGV[1]) > paused then
  paused = now + tonumber(ARGV[1])
end
local tat = tonumber(state[1]) or now
if tat < paused + tolerance then
  tat = paused + tolerance
end
redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', tat))
redis.call('HSET', KEYS[1], 'paused_until', string.format('%.0f', paused))
redis.call('PEXPIRE', KEYS[1], math.ceil((tat - now) / 1000) + 1000)
return paused - now
"""

_warning_lock = threading.Lock()
_last_warning = -math.inf


class RateLimitTimeout(RetryableError):
    """The account's request budget did not allow a request within the caller's timeout. Nothing was sent
    to IX; `retry_after` is the wait the limiter knew of when it gave up."""


def account_key(base_url: str) -> str:
    """The key of an IX account in Redis: a hash of its base URL (the URL names the account), so neither
    the API key nor the account name is stored."""
    normalized = base_url.strip().rstrip("/").lower()
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()[:32]


class RateLimiter:
    """At most `per_minute` requests a minute for one IX account, `burst` of them back to back after an
    idle spell, counted in Redis across every process and machine that shares `key`.

    `key` identifies the account (use account_key(base_url)); the Redis key is KEY_PREFIX + key.
    """

    def __init__(self, redis, key: str, per_minute: int = 600, burst: int = 10) -> None:
        if not key:
            raise ValueError("the rate limit key must not be empty")
        if per_minute <= 0:
            raise ValueError(f"per_minute must be positive, not {per_minute!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        self.key = KEY_PREFIX + key
        self.per_minute = per_minute
        self.burst = burst
        self._interval_us = max(1, round(60_000_000 / per_minute))
        self._tolerance_us = self._interval_us * (burst - 1)
        # register_script sends EVALSHA and falls back to loading the script when the server lacks it
        # (after a restart or a failover), so nothing needs loading up front.
        self._acquire_script = redis.register_script(_ACQUIRE)
        self._pause_script = redis.register_script(_PAUSE)
        self._redis_down_until = -math.inf

    def __repr__(self) -> str:
        return f"RateLimiter(key={self.key!r}, per_minute={self.per_minute}, burst={self.burst})"

    def acquire(self, timeout: float = 30.0) -> float:
        """Block until one request may be sent; return the seconds waited.

        Raises RateLimitTimeout, before sleeping, as soon as the wait is known to go past `timeout`: a
        worker is better off rescheduling its job than sleeping through a long pause.
        """
        started = time.monotonic()
        deadline = started + max(timeout, 0.0)
        while True:
            if self._redis_is_down():
                return time.monotonic() - started
            try:
                wait_us = int(self._acquire_script(keys=[self.key], args=[self._interval_us, self._tolerance_us]))
            except RedisError as exc:
                # Fail open: the limiter is there to avoid 429s, and a 429 costs one retried job, while
                # refusing to send would stop all invoicing for as long as Redis is away. The queue lives
                # in the same Redis, so during an outage only the jobs already running are sending, and
                # IX's own 429 (which the caller retries) is the backstop.
                self._redis_failed(exc)
                return time.monotonic() - started
            if wait_us <= 0:
                return time.monotonic() - started
            wait = wait_us / 1_000_000
            if time.monotonic() + wait > deadline:
                waited = time.monotonic() - started
                raise RateLimitTimeout(
                    f"InvoiceXpress request budget exhausted: no slot within {timeout:g} s "
                    f"(waited {waited:.1f} s, {wait:.1f} s more needed)",
                    retry_after=wait,
                )
            # Sleep until the slot the script named, then ask again: another worker may take it first, or
            # a pause may arrive meanwhile, and asking again sees both.
            time.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Make every worker on this account hold off for `seconds` (IX answered 429)."""
        seconds = float(seconds)
        if not seconds > 0:  # also NaN
            return
        seconds = min(seconds, MAX_PAUSE_SECONDS)
        if self._redis_is_down():
            return
        try:
            self._pause_script(keys=[self.key], args=[math.ceil(seconds * 1_000_000), self._tolerance_us])
        except RedisError as exc:
            # The caller is about to report IX's 429, which matters more than sharing it.
            self._redis_failed(exc)
            return
        logger.info("IX rate limit: requests on %s paused for %.1f s", self.key, seconds)

    def _redis_is_down(self) -> bool:
        return time.monotonic() < self._redis_down_until

    def _redis_failed(self, exc: RedisError) -> None:
        self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
        _warn_unavailable(self.key, exc)


def _warn_unavailable(key: str, exc: RedisError) -> None:
    """Warn at most once a minute per process: every request would otherwise log the same outage."""
    global _last_warning
    now = time.monotonic()
    with _warning_lock:
        if now - _last_warning < WARNING_INTERVAL_SECONDS:
            return
        _last_warning = now
    logger.warning(
        "IX rate limit not enforced: Redis unavailable (%s: %s); requests go out unthrottled for %s",
        type(exc).__name__,
        str(exc)[:200],
        key,
    )
