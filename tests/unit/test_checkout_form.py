from storefront.checkout import parse_checkout_form

GOOD = {
    "email": "ada@example.com", "full_name": "Ada Lovelace", "phone": "030 1234567",
    "address": "Unter den Linden 1", "city": "Berlin", "postal_code": "10117",
    "country": "DE", "shipping_method": "standard", "payment_token": "tok_abcdef123456",
}


def test_a_complete_form_gives_normalised_details():
    form = parse_checkout_form(GOOD)
    assert form.errors == {}
    assert form.details is not None
    assert form.details.phone == "+49301234567"
    assert form.details.shipping.code == "standard"
    assert form.payment_token == "tok_abcdef123456"


def test_every_bad_field_gets_its_own_message_and_what_was_typed_is_kept():
    typed = {"email": "not-an-email", "full_name": "<script>x</script>", "phone": "12",
             "address": "", "city": "B", "postal_code": "ABC", "country": "DE",
             "shipping_method": "teleport", "payment_token": ""}
    form = parse_checkout_form(typed)
    assert set(form.errors) == {"email", "full_name", "phone", "address", "city",
                                "postal_code", "shipping_method", "payment"}
    assert form.details is None
    assert form.values["full_name"] == "<script>x</script>"
    assert form.values["postal_code"] == "ABC"


def test_missing_fields_are_named_not_crashed_on():
    form = parse_checkout_form({})
    assert {"email", "full_name", "phone", "address", "city", "postal_code",
            "country", "payment"} <= set(form.errors)


def test_a_card_number_in_the_token_field_is_refused():
    form = parse_checkout_form(GOOD | {"payment_token": "4242424242424242"})
    assert "payment" in form.errors


def test_huge_values_are_cut_before_they_are_kept():
    form = parse_checkout_form(GOOD | {"full_name": "x" * 100_000})
    assert len(form.values["full_name"]) == 400
    assert "full_name" in form.errors
