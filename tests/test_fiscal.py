"""Portuguese rules: which tax numbers are sent, and which exemption reason a 0 % sale carries."""

from __future__ import annotations

import pytest

from connector.fiscal import EXEMPTION_REASONS, parse_tax_id, zero_rate_exemption


@pytest.mark.parametrize(("raw", "country", "sent"), [
    ("501964843", "PT", "501964843"),
    ("PT 501 964 843", None, "501964843"),  # spaces and the PT prefix, as buyers type them
    ("501.964.843", "PT", "501964843"),
    ("ESB58378431", "ES", "ESB58378431"),
    ("B58378431", "ES", "ESB58378431"),  # the member state's prefix added
    ("EL094014201", "GR", "EL094014201"),  # Greece's VAT prefix is EL
])
def test_valid_numbers_are_sent_in_the_form_ix_and_vies_expect(raw, country, sent):
    assert parse_tax_id(raw, country).number == sent


@pytest.mark.parametrize(("raw", "country"), [
    ("123456780", "PT"),  # fails the mod-11 check digit
    ("12345678", "PT"),
    ("ESB58378432", "ES"),
    ("B58378432", "ES"),
    ("DE123", "DE"),
    ("", "PT"),
    ("   ", None),
    ("!!!", "US"),
])
def test_invalid_numbers_are_never_sent(raw, country):
    assert parse_tax_id(raw, country) is None


def test_a_number_from_outside_the_eu_is_sent_as_typed_when_it_looks_like_one():
    assert parse_tax_id("12-3456789", "US").number == "123456789"
    assert not parse_tax_id("12-3456789", "US").eu_vat


def test_exports_outside_the_eu_are_m05():
    assert zero_rate_exemption("US", None, None) == "M05"
    assert zero_rate_exemption("CH", None, "M10") == "M05"


def test_goods_to_an_eu_business_with_a_valid_vat_number_are_m16():
    assert zero_rate_exemption("ES", parse_tax_id("B58378431", "ES"), None) == "M16"


def test_goods_to_an_eu_consumer_or_a_number_of_another_state_fall_to_the_store_default():
    assert zero_rate_exemption("ES", None, None) is None
    assert zero_rate_exemption("FR", parse_tax_id("B58378431", "ES"), "M10") == "M10"
    assert zero_rate_exemption("PT", parse_tax_id("501964843", "PT"), None) is None


def test_the_official_table_has_the_codes_in_use_and_none_withdrawn():
    assert {"M05", "M10", "M16", "M99"} <= set(EXEMPTION_REASONS)
    assert "M03" not in EXEMPTION_REASONS and "M08" not in EXEMPTION_REASONS
