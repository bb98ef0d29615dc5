"""The integration tier's servers and processes, for the browser tests: PostgreSQL, Redis, the connector."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Fixtures are found by name in a conftest: these are the integration tier's own, not copies.
from tests.integration.conftest import clean_db, clean_redis, postgres, procs, redis_server  # noqa: E402,F401
