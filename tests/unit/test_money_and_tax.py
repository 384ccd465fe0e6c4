from models.money import apply_rate, format_money
from models.pricing import order_totals
from models.shipping import SHIPPING_METHODS, shipping_method
from models.tax import vat_basis_points, vat_on


def test_money_is_shown_from_integer_cents_without_float_error():
    assert format_money(1234) == "€12.34"
    assert format_money(5) == "€0.05"
    assert format_money(123456789) == "€1,234,567.89"
    assert format_money(-250) == "-€2.50"
    assert format_money(1000, "CHF") == "10.00 CHF"


def test_rates_round_half_up_to_whole_cents():
    assert apply_rate(1000, 1900) == 190
    assert apply_rate(5, 1000) == 1  # 0.5 cent rounds up
    assert apply_rate(4, 1000) == 0  # 0.4 cent rounds down
    assert apply_rate(333, 2100) == 70  # 69.93


def test_vat_is_the_destination_country_standard_rate_and_zero_outside_the_eu():
    assert vat_basis_points("DE") == 1900
    assert vat_basis_points("fr") == 2000
    assert vat_basis_points("CH") == 0
    assert vat_on(10_000, "NL") == 2100


def test_order_total_adds_lines_shipping_and_vat_on_both():
    standard = shipping_method("standard")
    assert standard is not None
    totals = order_totals(4990, standard, "DE")
    assert totals.shipping_cents == 490
    assert totals.tax_cents == apply_rate(4990 + 490, 1900)
    assert totals.total_cents == 4990 + 490 + totals.tax_cents


def test_standard_shipping_is_free_from_its_threshold_and_express_never_is():
    standard, express = SHIPPING_METHODS
    assert standard.free_from_cents is not None
    assert standard.price_for(standard.free_from_cents - 1) == standard.price_cents
    assert standard.price_for(standard.free_from_cents) == 0
    assert express.price_for(10_000_000) == express.price_cents
    assert shipping_method("teleport") is None
