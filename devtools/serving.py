"""What the local fakes share: serving from a thread or until interrupted, the gate every API call passes, the
control endpoints (faults, reset, calls), and writing a state file whole."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from flask import Flask, jsonify, request
from werkzeug.serving import BaseWSGIServer

from devtools.faults import FaultRules
from devtools.faults import parse as parse_faults


def serve_in_thread(server: BaseWSGIServer, name: str) -> BaseWSGIServer:
    """Serve from a daemon thread (the tests' process may end without stopping it); server.shutdown() stops it."""
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


@contextmanager
def running(served: tuple[str, BaseWSGIServer]) -> Iterator[str]:
    """A fake's base URL (as its `serve_in_thread` gives it) for the `with` block; then it stops, port and all."""
    url, server = served
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def serve_until_interrupted(server: BaseWSGIServer, banner: str) -> None:
    """Print where it listens, then serve until Ctrl-C, and let the port go."""
    print(banner, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def log_and_fault(
    lock: threading.Lock, calls: list[dict[str, Any]], faults: FaultRules, path: str
) -> int | None:
    """Log the request (method, path, query), then apply the first fault rule that matches it.

    A "timeout" fault sleeps here and lets the request go on; any other returns the HTTP status to answer."""
    with lock:
        calls.append({"method": request.method, "path": path, "query": request.args.to_dict(flat=True)})
    fault = faults.take(request.method, path)
    if fault is None:
        return None
    if fault.kind == "timeout":
        time.sleep(fault.seconds)
        return None
    return int(fault.kind)


def guard_api(app: Flask, prefix: str, state_of: Callable[[], Any], fault_response: Callable[[int], Any],
              authorize: Callable[[Any], None]) -> None:
    """The gate every API call of a fake passes: under `prefix`, each request is logged and may meet a fault
    rule (answered by `fault_response(status)`), then must pass `authorize(state)`, which raises the fake's
    own refusal. The state has `lock`, `calls` and `faults`."""

    def gate() -> Any:
        path = api_path(prefix)
        if path is None:
            return None
        state = state_of()
        status = log_and_fault(state.lock, state.calls, state.faults, path)
        if status is not None:
            return fault_response(status)
        authorize(state)
        return None

    app.before_request(gate)


def api_path(prefix: str) -> str | None:
    """The request's path after `prefix` and its slash, or None for a request outside the API."""
    if not request.path.startswith(prefix + "/"):
        return None
    return request.path[len(prefix) + 1 :]



def write_json_atomically(path: Path, kept: Any) -> None:
    """Write `kept` as JSON beside `path`, then rename it over: a crash mid-write leaves the old state whole."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(kept, out, ensure_ascii=False)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def add_control_routes(app: Flask, state: Callable[[], Any], bad_body: Callable[[str], Exception]) -> None:
    """The control endpoints every fake has, needing no credentials: POST /_fake/faults (replace the fault
    rules: [{method, path (a regex on the path after the API's prefix), kind, times, seconds}]; kind "timeout"
    sleeps `seconds` before answering, any other kind is an HTTP status), POST /_fake/reset and GET /_fake/calls.

    `state()` is the fake's state (with `faults`, `calls`, `lock` and `reset()`); `bad_body(message)` the
    fake's own 400, in its platform's error shape.
    """

    def fake_faults():
        try:
            rules = parse_faults(request.get_json(silent=True))
        except ValueError as exc:
            raise bad_body(str(exc)) from None
        state().faults.replace(rules)
        return jsonify({"faults": len(rules)}), 200

    def fake_reset():
        state().reset()
        return jsonify({"reset": True}), 200

    def fake_calls():
        current = state()
        with current.lock:
            return jsonify(list(current.calls))

    app.add_url_rule("/_fake/faults", view_func=fake_faults, methods=["POST"])
    app.add_url_rule("/_fake/reset", view_func=fake_reset, methods=["POST"])
    app.add_url_rule("/_fake/calls", view_func=fake_calls, methods=["GET"])


class ControlClient:
    """A running fake's control endpoints, for tests and `./dev`: faults, the calls it answered, reset. Each call
    raises on an HTTP error; each fake's subclass adds how its own data is put in."""

    def __init__(self, url: str):
        self.url = url

    def faults(self, *rules: dict[str, Any]) -> None:
        """Replace the fault rules (none: clear them); the first matching rule not used up answers a request."""
        self._post("/_fake/faults", list(rules))

    def calls(self) -> list[dict[str, Any]]:
        """Every API call, oldest first: method, path (after the API's prefix) and query."""
        answer = requests.get(f"{self.url}/_fake/calls", timeout=5)
        answer.raise_for_status()
        return answer.json()

    def reset(self) -> None:
        """Forget everything put in, every fault rule and every call."""
        self._post("/_fake/reset", None)

    def _post(self, path: str, body: Any) -> Any:
        answer = requests.post(f"{self.url}{path}", json=body, timeout=5)
        answer.raise_for_status()
        return answer.json()
