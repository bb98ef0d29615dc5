"""Error reports to Sentry: on only with SENTRY_DSN, and scrubbed of payloads, e-mails, NIFs and secrets."""

from __future__ import annotations

import json

import pytest
import sentry_sdk

from config.settings import ConfigError, from_env
from connector import create_app, error_reports
from tests.conftest import API_KEY, SHOPIFY_SECRET, settings

DSN = "https://publickey@sentry.example/42"


def sample_event() -> dict:
    """An event as the SDK hands it to before_send for a failed webhook job."""
    return {
        "event_id": "0123456789abcdef0123456789abcdef",
        "level": "error",
        "message": f"IX refused key {API_KEY} for ana.silva@example.pt",
        "exception": {"values": [{
            "type": "PermanentError",
            "value": "NIF 123456789 is invalid for customer joao+shop@mail.example.com",
            "stacktrace": {"frames": [{"filename": "connector/issuing.py", "lineno": 88,
                                      "vars": {"api_key": "anything", "body": "{\"vat\": \"PT501964843\"}"}}]},
        }]},
        "request": {
            "url": f"https://connector.example/webhooks/shopify?api_key={API_KEY}",
            "data": "{\"email\": \"ana.silva@example.pt\", \"note\": \"raw order\"}",
            "headers": {"X-Shopify-Hmac-Sha256": "c2lnbmF0dXJl", "Content-Type": "application/json",
                        "Authorization": "Bearer something"},
            "cookies": {"session": "abc"},
        },
        "breadcrumbs": {"values": [{"category": "connector.webhooks",
                                    "message": f"verifying with {SHOPIFY_SECRET}"}]},
        "extra": {"stripe": "called with sk_live_abcdefghijklmnop1234 and whsec_0123456789abcdef"},
        "contexts": {"trace": {"trace_id": "123456789012345678901234567890ab", "span_id": "1234567890abcdef"}},
    }


def scrubbed() -> tuple[dict, str]:
    config = from_env(settings(SENTRY_DSN=DSN, METRICS_TOKEN="metrics-token-0123456789"))
    before_send = error_reports.scrubber(error_reports.secret_values(config))
    event = before_send(sample_event(), {})
    # Sentry's own ids may hold nine digits in a row; the rest is what a person wrote or a shop sent.
    return event, json.dumps({key: value for key, value in event.items() if key not in ("event_id", "contexts")})


def test_a_sample_event_loses_e_mails_nifs_api_keys_and_webhook_secrets():
    event, text = scrubbed()

    for secret in ("@example.pt", "joao+shop", "123456789", "501964843", API_KEY, SHOPIFY_SECRET,
                   "sk_live_abcdefghijklmnop1234", "whsec_0123456789abcdef", "raw order", "c2lnbmF0dXJl",
                   "Bearer something"):
        assert secret not in text, secret
    # What the operator needs to find the fault is still there.
    assert event["exception"]["values"][0]["type"] == "PermanentError"
    assert event["exception"]["values"][0]["value"].startswith("NIF [Filtered] is invalid for customer")
    assert event["request"]["headers"]["Content-Type"] == "application/json"
    assert event["breadcrumbs"]["values"][0]["category"] == "connector.webhooks"


def test_the_request_body_is_dropped_and_sentrys_own_ids_are_kept():
    event, _ = scrubbed()

    assert event["request"]["data"] == "[Filtered]"
    assert event["request"]["cookies"] == "[Filtered]"
    assert event["event_id"] == "0123456789abcdef0123456789abcdef"
    assert event["contexts"]["trace"]["trace_id"] == "123456789012345678901234567890ab"


def test_every_secret_setting_is_known_to_the_scrubber():
    config = from_env(settings(
        SENTRY_DSN=DSN, METRICS_TOKEN="metrics-token-0123456789", STRIPE_WEBHOOK_SECRET="whsec_one,whsec_two",
        STRIPE_API_KEY="rk_test_stripe-key", ADMIN_PASSWORD="admin-password-123",
        DATABASE_URL="postgres://user:db-password-9@db.example/connector"))

    secrets = set(error_reports.secret_values(config))

    assert {API_KEY, SHOPIFY_SECRET, "whsec_one", "whsec_two", "rk_test_stripe-key", "admin-password-123",
            "metrics-token-0123456789", "db-password-9"} <= secrets


def test_sentry_starts_with_the_dsn_without_personal_data(monkeypatch, redis, tmp_path):
    calls = []
    monkeypatch.setattr(sentry_sdk, "init", lambda **options: calls.append(options))
    create_app(overrides={"REDIS_CONNECTION": redis},
               environ=settings(SENTRY_DSN=DSN, DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}"))

    [options] = calls
    assert options["dsn"] == DSN and options["send_default_pii"] is False
    assert {type(i).__name__ for i in options["integrations"]} == {"FlaskIntegration", "RqIntegration"}
    assert API_KEY not in json.dumps(options["before_send"](sample_event(), {}))


def test_without_a_dsn_sentry_is_not_started(monkeypatch, redis, tmp_path):
    calls = []
    monkeypatch.setattr(sentry_sdk, "init", lambda **options: calls.append(options))
    create_app(overrides={"REDIS_CONNECTION": redis},
               environ=settings(DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}"))

    assert calls == []


def test_a_dsn_that_is_not_one_is_refused():
    with pytest.raises(ConfigError, match="SENTRY_DSN must be"):
        from_env(settings(SENTRY_DSN="sentry.example/42"))
