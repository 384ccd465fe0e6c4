import pytest

from models.contact import (
    InvalidField,
    normalise_country,
    normalise_email,
    normalise_phone,
    normalise_postal_code,
    normalise_text,
)


@pytest.mark.parametrize(("country", "raw", "expected"), [
    ("DE", "10117", "10117"),
    ("NL", "1012ab", "1012 AB"),
    ("NL", "1012  AB", "1012 AB"),
    ("GB", "sw1a1aa", "SW1A 1AA"),
    ("PL", "00-950", "00-950"),
    ("PT", "1000-001", "1000-001"),
    ("IE", "d02x285", "D02 X285"),
    ("SE", "11455", "114 55"),
])
def test_postal_codes_are_checked_and_written_the_way_each_country_writes_them(
    country, raw, expected
):
    assert normalise_postal_code(raw, country) == expected


@pytest.mark.parametrize(("country", "raw"), [
    ("DE", "1011"), ("DE", "ABCDE"), ("NL", "AB 1234"), ("GB", "12345"), ("PL", "00950"),
])
def test_a_postal_code_of_another_shape_is_refused_with_an_example(country, raw):
    with pytest.raises(InvalidField, match="not a postal code"):
        normalise_postal_code(raw, country)


def test_phone_numbers_become_e164_read_for_the_shipping_country():
    assert normalise_phone("030 1234567", "DE") == "+49301234567"
    assert normalise_phone("+33 1 42 68 53 00", "DE") == "+33142685300"
    with pytest.raises(InvalidField):
        normalise_phone("12", "DE")
    with pytest.raises(InvalidField):
        normalise_phone("not a phone", "DE")
    with pytest.raises(InvalidField, match="Enter a phone"):
        normalise_phone("  ", "DE")


def test_email_is_validated_without_dns_and_normalised():
    assert normalise_email(" Ada@Example.COM ") == "Ada@example.com"
    for bad in ("ada", "ada@", "@example.com", "ada@exa mple.com", ""):
        with pytest.raises(InvalidField):
            normalise_email(bad)


def test_names_with_markup_or_control_characters_are_refused_with_a_reason():
    with pytest.raises(InvalidField, match="cannot contain"):
        normalise_text("<script>alert(1)</script>", what="full name")
    with pytest.raises(InvalidField, match="cannot print"):
        normalise_text("Ada\x00Lovelace", what="full name")
    assert normalise_text("  Ada   Lovelace ", what="full name") == "Ada Lovelace"
    with pytest.raises(InvalidField, match="too long"):
        normalise_text("x" * 201, what="full name")


def test_only_countries_we_ship_to_are_accepted():
    assert normalise_country("de") == "DE"
    with pytest.raises(InvalidField, match="do not ship"):
        normalise_country("US")
    with pytest.raises(InvalidField, match="Choose"):
        normalise_country("")
