"""Portuguese invoicing rules the connector applies: tax numbers, VAT exemption reasons, EU membership. No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
