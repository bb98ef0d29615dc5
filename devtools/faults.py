"""Fault rules the local fakes share: which requests fail, how (an HTTP status or a slow answer), how often."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 30.0  # longer than any client's read timeout


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    kind: str  # an HTTP status such as "500", or "timeout"
    seconds: float
    times: int | None  # None: every matching request

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and self.path.search(path) is not None


def parse(rules: Any) -> list[Fault]:
    """[{method, path (a regex searched in the request path), kind, times, seconds}]; raises ValueError."""
    if isinstance(rules, dict):
        rules = [rules]
    if not isinstance(rules, list):
        raise ValueError("the body must be a list of fault rules")
    faults = []
    for rule in rules:
        try:
            kind = str(rule.get("kind", "500"))
            if kind != "timeout" and not (kind.isdigit() and 400 <= int(kind) <= 599):
                raise ValueError(f"kind {kind!r} is neither 'timeout' nor an HTTP error status")
            times = rule.get("times", 1)
            faults.append(
                Fault(
                    method=str(rule.get("method", "*")).upper(),
                    path=re.compile(str(rule.get("path", ""))),
                    kind=kind,
                    seconds=float(rule.get("seconds", DEFAULT_TIMEOUT_SECONDS)),
                    times=None if times is None else int(times),
                )
            )
        except (AttributeError, TypeError, ValueError, re.error) as exc:
            raise ValueError(f"unreadable fault rule {rule!r}: {exc}") from None
    return faults


class FaultRules:
    """The rules in force; each request takes the first that matches, which counts down its `times`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def replace(self, faults: list[Fault]) -> None:
        with self._lock:
            self._faults = list(faults)

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None
