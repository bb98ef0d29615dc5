"""Portuguese rules: which tax numbers are sent, and which exemption reason a 0 % sale carries."""

from __future__ import annotations

import pytest

from connector.fiscal import EXEMPTION_REASONS, find_tax_id, parse_tax_id, zero_rate_exemption


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


# --- tax numbers in free text ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "country", "found"), [
    ("501964843", "PT", "501964843"),
    ("NIF: 501 964 843", "PT", "501964843"),
    ("Contribuinte 501964843", "PT", "501964843"),
    ("PT 501 964 843", "PT", "501964843"),
    ("PT501964843", None, "501964843"),
    ("pt-501964843", "PT", "501964843"),
    ("NIPC: 501.964.843", "PT", "501964843"),
    ("nif 501-964-843", "PT", "501964843"),
    ("Empresa X, Lda - NIF 501964843", "PT", "501964843"),
    ("Empresa X, Lda (NIF 501964843)", "PT", "501964843"),
    ("501964843 Empresa X", "PT", "501964843"),
    ("Rua do Ouro 12, 1100-060 Lisboa, NIF 501964843", "PT", "501964843"),  # other numbers first
    ("NIF 501964843, tel 912 345 678", "PT", "501964843"),
    ("Empresa X, Lda - NIF 501964843", "ES", "PT501964843"),  # a Portuguese NIF for a buyer abroad
    ("Distribuciones SL ESB58378431", "ES", "ESB58378431"),
    ("Distribuciones SL, CIF B58378431", "ES", "ESB58378431"),  # labelled, prefix left out
    ("Beispiel GmbH USt-IdNr. DE 136 695 976", "DE", "DE136695976"),
    ("Beispiel GmbH USt-IdNr. DE 136 695 976 Berlin", "DE", "DE136695976"),
    ("Voorbeeld BV NL-004495445B01", "NL", "NL004495445B01"),
    ("Exemple SARL FR 40 303 265 045", "FR", "FR40303265045"),
    ("Paradeigma AE EL094014201", "GR", "EL094014201"),
    ("Condomínio do Prédio, NIF 901234567", "PT", "901234567"),  # a 9… NIF when labelled
    ("Condomínio do Prédio PT901234567", "PT", "901234567"),
])
def test_a_tax_number_is_found_however_the_buyer_typed_it(text, country, found):
    assert find_tax_id(text, country) == found
    assert parse_tax_id(found, country) is not None  # and the invoice plan takes it as it comes back


@pytest.mark.parametrize(("text", "country"), [
    ("+351 912 345 675", "PT"),  # a phone number whose last nine digits pass the NIF check
    ("+351 912345675", "PT"),
    ("00351 912345675", "PT"),
    ("Tel. 215 964 845", "PT"),  # a landline that passes the check, after a phone label
    ("Telemóvel: 215964845", "PT"),
    ("912 345 675", "PT"),  # passes the check and 91 starts NIFs too, but unlabelled it is a mobile
    ("Empresa X 912345675", "PT"),
    ("923 456 783", "PT"),  # passes the check, but NIFs never start with 92 (mobile numbers do)
    ("400000008", "PT"),  # nor with 40
    ("1000-001 Lisboa", "PT"),  # a postcode
    ("Encomenda #501964843", "PT"),  # an order number
    ("Rua Augusta 501", "PT"),  # a street number
    ("Lote 12 3000-123 Coimbra", "PT"),  # numbers next to each other are not one number
    ("NIF 501964842", "PT"),  # nine digits, wrong check digit
    ("5019648431", "PT"),  # a NIF inside a longer run of digits
    ("15019648431", "PT"),
    ("IBAN PT50 0002 0123 1234 5678 9015 4", "PT"),
    ("501 964 843 1", "PT"),  # grouped, but the run goes on
    ("501.964.843.1", "PT"),
    ("Desk2000, Lda", "PT"),
    ("ESB58378432", "ES"),  # Spanish check fails
    ("Distribuciones SL B58378431", "ES"),  # unprefixed and unlabelled: could be any code
    ("USt-IdNr. DE123456789", "DE"),
    ("", "PT"),
    (None, None),
])
def test_other_numbers_are_never_taken_for_a_tax_number(text, country):
    assert find_tax_id(text, country) is None
