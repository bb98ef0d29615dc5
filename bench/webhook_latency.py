"""Answer times of signed POST /webhooks/shopify relative to GET /healthz on real PostgreSQL, Redis, gunicorn."""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import math
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from tests.integration import services  # noqa: E402

HOST = "127.0.0.1"
SECRET = "bench-shopify-secret"
SHOP = "bench.myshopify.com"
BODY = (REPO_ROOT / "tests" / "fixtures" / "shopify" / "paid_b2c_tax_included.json").read_bytes()
REQUEST_TIMEOUT = 10.0  # seconds, per request
KINDS = ("baseline", "new", "duplicate")
LABELS = {
    "baseline": "GET /healthz (baseline)",
    "new": "POST webhook, new event",
    "duplicate": "POST webhook, duplicate",
}
EXPECTED = {"new": "accepted", "duplicate": "duplicate"}


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)  # seconds, successful answers only
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0  # seconds spent in this kind's phases
    round_medians: list[float] = field(default_factory=list)


def webhook_headers(event_id: str) -> dict[str, str]:
    digest = base64.b64encode(hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()).decode()
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "orders/paid",
        "X-Shopify-Hmac-Sha256": digest,
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Event-Id": event_id,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
    }


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


class Load:
    """C client threads, each with its own requests.Session, firing a fixed list of requests."""

    def __init__(self, base_url: str, concurrency: int, deadline: float):
        self.base_url = base_url
        self.sessions = [requests.Session() for _ in range(concurrency)]
        self.deadline = deadline  # time.monotonic() after which no new request is sent
        self.accepted: list[str] = []  # event ids stored so far, the pool duplicates are drawn from
        self._lock = threading.Lock()
        self._sequence = 0
        self.truncated = False  # a phase ran out of time before sending all its requests

    def close(self) -> None:
        for session in self.sessions:
            session.close()

    def next_event_id(self) -> str:
        with self._lock:
            self._sequence += 1
            return f"bench-{self._sequence}"

    def one(self, session: requests.Session, kind: str, event_id: str | None) -> tuple[float, str | None]:
        """Send one request; returns (seconds, error or None)."""
        headers = webhook_headers(event_id) if kind != "baseline" else None  # signed outside the timing
        start = time.perf_counter()
        try:
            if kind == "baseline":
                answer = session.get(f"{self.base_url}/healthz", timeout=REQUEST_TIMEOUT)
            else:
                answer = session.post(f"{self.base_url}/webhooks/shopify", data=BODY, headers=headers,
                                      timeout=REQUEST_TIMEOUT)
            elapsed = time.perf_counter() - start
            is_json = answer.headers.get("Content-Type", "").startswith("application/json")
            payload = answer.json() if is_json else {}
        except (requests.RequestException, ValueError) as exc:
            return time.perf_counter() - start, f"{kind}: {exc!r}"
        if answer.status_code != 200:
            return elapsed, f"{kind}: HTTP {answer.status_code} {answer.text[:200]!r}"
        if kind == "baseline" and (payload.get("database"), payload.get("queue")) != ("ok", "ok"):
            return elapsed, f"baseline: unhealthy {payload!r}"
        if kind != "baseline" and payload.get("status") != EXPECTED[kind]:
            return elapsed, f"{kind}: expected {EXPECTED[kind]!r}, got {payload!r}"
        if kind == "new":
            with self._lock:
                self.accepted.append(event_id)
        return elapsed, None

    def phase(self, kind: str, count: int, into: Samples | None, budget: float) -> int:
        """Send ``count`` requests of one kind over all clients at once, for at most ``budget`` seconds;
        returns how many were sent."""
        deadline = min(self.deadline, time.monotonic() + budget)
        if kind == "new":
            ids = [self.next_event_id() for _ in range(count)]
        elif kind == "duplicate":
            with self._lock:
                pool = list(self.accepted)
            if not pool:
                raise RuntimeError("no stored event to send again")
            ids = [pool[i % len(pool)] for i in range(count)]
        else:
            ids = [None] * count
        clients = len(self.sessions)
        results: list[list[tuple[float, str | None]]] = [[] for _ in range(clients)]
        barrier = threading.Barrier(clients, timeout=10)

        def client(index: int) -> None:
            barrier.wait()
            for event_id in ids[index::clients]:
                if time.monotonic() > deadline:
                    self.truncated = True
                    return
                results[index].append(self.one(self.sessions[index], kind, event_id))

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            # Bounded: every request has a timeout and the loop stops at the deadline.
            thread.join(timeout=max(0.0, deadline - time.monotonic()) + 2 * REQUEST_TIMEOUT)
        wall = time.perf_counter() - start
        flat = [r for per_client in results for r in list(per_client)]
        if into is not None:
            into.wall += wall
            ok = [seconds for seconds, error in flat if error is None]
            into.latencies += ok
            into.errors += [error for _, error in flat if error is not None]
            if ok:
                into.round_medians.append(median(ok))
        return len(flat)


def start_stack(tmpdir: Path, stack: dict) -> str:
    """PostgreSQL, Redis, migrations and gunicorn (2 workers), all on 127.0.0.1; returns the base URL."""
    stack["postgres"] = services.start_postgres(tmpdir)
    stack["redis"] = services.start_redis(tmpdir)
    env = {
        "PYTHONPATH": str(REPO_ROOT),
        "DATABASE_URL": stack["postgres"].url,
        "REDIS_URL": stack["redis"].url,
        "SHOPIFY_WEBHOOK_SECRET": SECRET,
        "INVOICEXPRESS_API_KEY": "bench-ix-key",
        "INVOICEXPRESS_BASE_URL": f"http://{HOST}:9",  # never called: no RQ worker runs
        "LOG_LEVEL": "INFO",
    }
    logdir = tmpdir / "procs"
    upgrade = services.Proc("migrate", [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
                            logdir=logdir, env=env, cwd=REPO_ROOT)
    stack["migrate"] = upgrade
    if upgrade.wait(timeout=60) != 0:
        raise RuntimeError(f"db upgrade failed:\n{upgrade.output(4000)}")
    port = services.free_port()
    web = services.Proc("web", [services.bin_path("gunicorn"), "wsgi:app", "--bind", f"{HOST}:{port}",
                                "--workers", "2"], logdir=logdir, env=env, cwd=REPO_ROOT)
    stack["web"] = web
    base_url = f"http://{HOST}:{port}"
    web.wait_for_http(f"{base_url}/healthz", timeout=30)
    return base_url


def stop_stack(stack: dict) -> None:
    """Stop everything started, in reverse order, carrying on past failures."""
    for name in ("web", "migrate"):
        proc = stack.get(name)
        if proc is not None:
            try:
                proc.terminate(timeout=10)
            except Exception as exc:  # noqa: BLE001 - stop the rest before giving up
                print(f"warning: stopping {name}: {exc!r}", file=sys.stderr)
    for name in ("redis", "postgres"):
        server = stack.get(name)
        if server is not None:
            try:
                server.close()
            except Exception as exc:  # noqa: BLE001
                print(f"warning: stopping {name}: {exc!r}", file=sys.stderr)


def sanity(base_url: str, database_url: str) -> str:
    health = requests.get(f"{base_url}/healthz", timeout=REQUEST_TIMEOUT).json()
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            stored = connection.scalar(sa.text("SELECT count(*) FROM webhook_events"))
    finally:
        engine.dispose()
    return f"{stored} events stored, {health.get('queued_jobs')} jobs queued"


def report(samples: dict[str, Samples], args: argparse.Namespace, sanity_line: str) -> int:
    base = samples["baseline"]
    if not base.latencies:
        print("no successful baseline request: nothing to compare against", file=sys.stderr)
        return 1
    base_sorted = sorted(base.latencies)
    base_median, base_p99 = median(base_sorted), percentile(base_sorted, 99)
    missing = False
    print(f"webhook latency: gunicorn 2 workers, {args.concurrency} clients, {args.rounds} rounds "
          f"(kinds interleaved), {args.requests} requests per kind requested")
    print(f"{'':26}{'n':>5}{'median ms':>11}{'p99 ms':>9}{'median/base':>13}{'p99/base':>10}{'req/s':>8}")
    for kind in KINDS:
        s = samples[kind]
        if not s.latencies:
            print(f"{LABELS[kind]:26}{0:>5}  (no successful answer)")
            missing = True
            continue
        ordered = sorted(s.latencies)
        med, p99 = median(ordered), percentile(ordered, 99)
        rate = len(ordered) / s.wall if s.wall else 0.0
        print(f"{LABELS[kind]:26}{len(ordered):>5}{med * 1e3:>11.2f}{p99 * 1e3:>9.2f}"
              f"{med / base_median:>13.2f}{p99 / base_p99:>10.2f}{rate:>8.0f}")
    for kind in ("new", "duplicate"):
        ratios = [m / b for m, b in zip(samples[kind].round_medians, base.round_medians, strict=False)]
        print(f"per-round median/base, {kind}: " + (" ".join(f"{r:.2f}" for r in ratios) or "n/a"))
    errors = [e for kind in KINDS for e in samples[kind].errors]
    print(f"sanity: {sanity_line}, {len(errors)} failed requests")
    for error in errors[:5]:
        print(f"  {error}")
    return 1 if errors or missing else 0


def run(args: argparse.Namespace) -> int:
    tmpdir = Path(tempfile.mkdtemp(prefix="connector-bench-"))
    stack: dict = {}
    load = None
    try:
        started = time.monotonic()
        base_url = start_stack(tmpdir, stack)
        print(f"stack up in {time.monotonic() - started:.1f}s at {base_url}", flush=True)
        # Hard stop for all load, warm-up included.
        load = Load(base_url, args.concurrency, deadline=time.monotonic() + args.max_seconds + 30)
        # Warm-up (not measured): every worker opens its DB pool and Redis connection; the store row exists.
        for kind in KINDS:
            load.phase(kind, max(2 * args.concurrency, 10), None, budget=10)
        load.truncated = False
        samples = {kind: Samples() for kind in KINDS}
        per_phase = max(1, args.requests // args.rounds)
        # Every phase gets an equal share of the time, so a slow kind can't starve the others.
        budget = args.max_seconds / (args.rounds * len(KINDS))
        for round_no in range(args.rounds):
            # Rotate the order so no kind always runs first or right after another.
            order = KINDS[round_no % 3:] + KINDS[:round_no % 3]
            for kind in order:
                load.phase(kind, per_phase, samples[kind], budget)
        if load.truncated:
            print(f"warning: a phase used up its {budget:.1f}s share of --max-seconds {args.max_seconds}; "
                  "it sent fewer requests than asked", file=sys.stderr)
        return report(samples, args, sanity(base_url, stack["postgres"].url))
    except Exception:
        web = stack.get("web")
        if web is not None:
            print(f"gunicorn log tail:\n{web.output(3000)}", file=sys.stderr)
        raise
    finally:
        if load is not None:
            load.close()
        stop_stack(stack)
        shutil.rmtree(tmpdir, ignore_errors=True)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def interrupt(signum, frame):
    raise KeyboardInterrupt(f"received signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=positive, default=300,
                        help="measured requests per kind (baseline, new, duplicate), split over the rounds")
    parser.add_argument("--concurrency", type=positive, default=4, help="concurrent client threads")
    parser.add_argument("--rounds", type=positive, default=3, help="times each kind is measured, interleaved")
    parser.add_argument("--max-seconds", type=float, default=30.0,
                        help="time budget of the measured load, shared equally by all phases")
    args = parser.parse_args()
    if args.concurrency > 64:
        parser.error("--concurrency is capped at 64")
    # SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C so the finally blocks stop every process.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        return run(args)
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'Ctrl-C'}); everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
