"""Portuguese invoicing rules the connector applies: tax numbers, VAT exemption reasons, EU membership. No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from stdnum.eu import vat as eu_vat
from stdnum.pt import nif as pt_nif

# The Tax Authority's exemption reason codes (as InvoiceXpress lists them). M03 and M08 were
# withdrawn in 2022 and are not offered.
EXEMPTION_REASONS: dict[str, str] = {
    "M01": "Artigo 16.º, n.º 6 do CIVA",
    "M02": "Artigo 6.º do Decreto-Lei n.º 198/90, de 19 de junho",
    "M04": "Isento artigo 13.º do CIVA",
    "M05": "Isento artigo 14.º do CIVA",
    "M06": "Isento artigo 15.º do CIVA",
    "M07": "Isento artigo 9.º do CIVA",
    "M09": "IVA - não confere direito a dedução (artigo 62.º alínea b) do CIVA)",
    "M10": "IVA - regime de isenção (artigo 57.º do CIVA)",
    "M11": "Regime particular do tabaco",
    "M12": "Regime da margem de lucro - Agências de viagens",
    "M13": "Regime da margem de lucro - Bens em segunda mão",
    "M14": "Regime da margem de lucro - Objetos de arte",
    "M15": "Regime da margem de lucro - Objetos de coleção e antiguidades",
    "M16": "Isento artigo 14.º do RITI",
    "M19": "Outras isenções",
    "M20": "IVA - regime forfetário",
    "M21": "IVA - não confere direito à dedução (artigo 72.º n.º 4 do CIVA)",
    "M25": "Mercadorias à consignação",
    "M30": "IVA - autoliquidação (artigo 2.º n.º 1 alínea i) do CIVA)",
    "M31": "IVA - autoliquidação (artigo 2.º n.º 1 alínea j) do CIVA)",
    "M32": "IVA - autoliquidação (artigo 2.º n.º 1 alínea l) do CIVA)",
    "M33": "IVA - autoliquidação (artigo 2.º n.º 1 alínea m) do CIVA)",
    "M40": "IVA - autoliquidação (artigo 6.º n.º 6 alínea a) do CIVA, a contrário)",
    "M41": "IVA - autoliquidação (artigo 8.º n.º 3 do RITI)",
    "M42": "IVA - autoliquidação (Decreto-Lei n.º 21/2007, de 29 de janeiro)",
    "M43": "IVA - autoliquidação (Decreto-Lei n.º 362/99, de 16 de setembro)",
    "M44": "IVA - regras específicas - artigo 6.º do CIVA",
    "M45": "IVA - regime transfronteiriço de isenção (artigo 58.º-A do CIVA)",
    "M46": "IVA - e-TaxFree",
    "M99": "Não sujeito ou não tributado",
}
EXPORT = "M05"  # goods leaving the EU (art. 14.º CIVA)
INTRA_EU_SUPPLY = "M16"  # goods to a business registered for VAT in another member state (art. 14.º RITI)
NOT_SUBJECT = "M99"  # gift card sales and tips: no supply of goods or services takes place

# Member states by ISO code (Greece's VAT prefix is EL, its ISO code GR).
EU_COUNTRIES = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()
)
_VAT_PREFIX = {"GR": "EL"}

# Portugal's VAT rates in percent: the mainland's 6 / 13 / 23, Madeira's 5 / 12 / 22, the Azores' 4 / 9 / 16.
# What a tax amount is checked against when nothing else says its rate.
VAT_RATES = frozenset(Decimal(rate) for rate in (4, 5, 6, 9, 12, 13, 16, 22, 23))


@dataclass(frozen=True)
class TaxId:
    """A buyer's tax number as we will send it, and whose it is."""

    number: str  # what goes in IX's fiscal_id
    country: str  # ISO code of the issuing country
    eu_vat: bool  # a VAT number of another member state (intra-EU B2B)


def parse_tax_id(raw: str | None, country: str | None) -> TaxId | None:
    """The buyer's tax number if it is valid for where the buyer is, else None.

    A Portuguese buyer (or one with no country) needs a valid NIF; a buyer elsewhere in the EU a valid
    VAT number of that state (with or without its prefix); elsewhere we cannot check, so only a sane
    alphanumeric number is accepted.
    """
    text = re.sub(r"[\s.\-/]", "", raw or "").upper()
    if not text:
        return None
    country = (country or "PT").upper()
    if country == "PT" or text.startswith("PT"):
        number = text.removeprefix("PT")
        return TaxId(number, "PT", False) if pt_nif.is_valid(number) else None
    if country in EU_COUNTRIES:
        prefix = _VAT_PREFIX.get(country, country)
        number = text if text.startswith(prefix) else prefix + text
        return TaxId(number, country, True) if eu_vat.is_valid(number) else None
    if re.fullmatch(r"[A-Z0-9]{4,20}", text) and re.search(r"\d", text):
        return TaxId(text, country, False)
    return None


# --- tax numbers in free text ---------------------------------------------------------------------------
#
# Buyers type their number wherever the shop lets them, with labels and spacing of their own: "NIF: 501 964
# 843", "PT 501.964.843", "Empresa X, Lda - NIF 501964843", "USt-IdNr. DE 136 695 976". A candidate is only
# taken when its check digit holds, and never from a longer run of digits: phone numbers ("+351 912 345
# 678"), postcodes ("1000-001"), order and street numbers are left alone.

# First digits the Tax Authority gives NIFs (1–3 people, 45 non-resident people, 5 companies, 6 the State,
# 7x and 9x estates, funds, condominiums and non-residents, 8 former sole traders). Mobile numbers start
# with 92, 93 and 96, which no NIF does.
_NIF_START = re.compile(r"[123568]|45|7[0124579]|9[0189]")
# Nine digits, alone or as 3 + 3 + 3 with one kind of separator, never touching other digits, a "+"
# (an international phone number), a "#" (an order number) or a "+351 "-like dialling code before it.
_NIF_IN_TEXT = re.compile(
    r"(?<![0-9A-Za-z+#])(?<!\d[ .\-/])(?<!\+\d )(?<!\+\d\d )(?<!\+\d{3} )"
    r"(?:(?P<pt>[Pp][Tt])[ .\-]?)?"
    r"(?P<digits>\d{9}|\d{3}(?P<sep>[ .\-])\d{3}(?P=sep)\d{3})"
    r"(?![0-9A-Za-z])(?![ .\-/]\d)"
)
# A member state's VAT prefix, then letters and digits (with a digit), maybe in groups: "ESB58378431",
# "NL-123456789B01", "DE 136 695 976".
_VAT_PREFIXES = "AT BE BG CY CZ DE DK EE EL ES FI FR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK XI"
_VAT_IN_TEXT = re.compile(
    rf"(?<![0-9A-Za-z])(?P<prefix>{'|'.join(_VAT_PREFIXES.split())})[ .\-]?"
    r"(?P<body>(?=[A-Za-z]*\d)[0-9A-Za-z]+(?:[ .\-][0-9A-Za-z]+)*)"
)
# A label before a member state's number typed without its prefix ("CIF B58378431", "VAT: 123…").
_LABELLED = re.compile(
    r"(?i:\b(?:nif|nipc|cif|vat|tva|iva|btw|ust-?id(?:nr)?|uid|nip|tax\s*id|vat\s*(?:no|number)))"
    r"\.?\s*(?:n\.?[ºo°]\.?\s*)?[:#]?\s*(?P<body>(?=[A-Za-z]*\d)[0-9A-Za-z]+(?:[ .\-][0-9A-Za-z]+)*)"
)
# A Portuguese tax label right before a number ("NIF: ", "Contribuinte n.º ").
_NIF_LABEL = re.compile(
    r"(?i:\b(?:nif|nipc|contribuinte|tax\s*id|vat(?:\s*(?:no|number))?)\b\.?\s*(?:n\.?[ºo°]\.?\s*)?[:#]?\s*)$"
)
_PHONE_LABEL = re.compile(r"(?i:\b(?:tel|tlm|tlf|telef|telefone|telem[oó]vel|phone|mobile|fax)\b\.?\s*:?\s*)$")


def find_tax_id(text: str | None, country: str | None) -> str | None:
    """The first valid tax number written anywhere in `text`, as `parse_tax_id` takes it; None if none.

    A Portuguese NIF comes back as its 9 digits for a buyer in Portugal (or of no known country), with
    "PT" before it for a buyer elsewhere, so that it is still read as Portuguese. Another member state's
    VAT number comes back with its prefix; one typed without it is only taken after a tax label and
    for a buyer of that state. Numbers that merely look like one (wrong check digit) are never taken.
    """
    text = text or ""
    if not text.strip():
        return None
    country = (country or "PT").upper()
    found: list[tuple[int, str]] = []
    for match in _NIF_IN_TEXT.finditer(text):
        digits = re.sub(r"\D", "", match["digits"])
        before = text[: match.start()]
        if _PHONE_LABEL.search(before) or not _NIF_START.match(digits):
            continue
        if digits[0] == "9" and not match["pt"] and not _NIF_LABEL.search(before):
            continue  # 90/91/98/99 NIFs are rare and 91 is also a mobile prefix: only taken when labelled
        if pt_nif.is_valid(digits):
            found.append((match.start(), digits if country == "PT" else "PT" + digits))
            break
    for match in _VAT_IN_TEXT.finditer(text):
        number = _valid_vat(match["prefix"].upper(), match["body"])
        if number and not number.startswith("PT"):  # Portuguese numbers are read above
            found.append((match.start(), number))
            break
    prefix = _VAT_PREFIX.get(country, country)
    if country != "PT" and country in EU_COUNTRIES:
        for match in _LABELLED.finditer(text):
            number = _valid_vat(prefix, match["body"])
            if number:
                found.append((match.start(), number))
                break
    return min(found)[1] if found else None


def _valid_vat(prefix: str, body: str) -> str | None:
    """`prefix` + the longest run of `body`'s groups that is a valid VAT number, compacted; else None."""
    groups = re.split(r"[ .\-]", body)[:8]  # no VAT number is typed in more groups than that
    for count in range(len(groups), 0, -1):
        number = prefix + "".join(groups[:count]).upper()
        if len(number) <= 16 and eu_vat.is_valid(number):
            return number
    return None


def zero_rate_exemption(ship_to: str | None, tax_id: TaxId | None, default: str | None) -> str | None:
    """The exemption reason for goods sold at 0 % VAT, or None when no rule covers the sale.

    Goods leaving the EU are exports; goods to a VAT-registered business elsewhere in the EU are an
    intra-community supply; anything else needs the store's own default (e.g. M10 for a store in the
    small-business regime), or a person.
    """
    country = (ship_to or "").upper()
    if country and country not in EU_COUNTRIES:
        return EXPORT
    if country and country != "PT" and tax_id is not None and tax_id.eu_vat and tax_id.country == country:
        return INTRA_EU_SUPPLY
    return default
