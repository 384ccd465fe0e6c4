"""Each fraud signal, the score and the decision thresholds, as pure rules."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import ValidationError

from models.screening import (
    DEFAULT_RULES,
    SIGNAL_CODES,
    Decision,
    Facts,
    RuleSetBody,
    Thresholds,
    decide,
    evaluate,
    forwarder_in,
    score,
)

CLEAN = Facts(
    email="ada@example.com", email_orders=0, ip="192.0.2.1", ip_orders=0,
    card_fingerprint="fp1", card_orders=0, device_id="dev1", device_orders=0,
    failed_attempts=0, shipping_country="DE", card_country="DE", shipping_name="Ada Lovelace",
    cardholder_name="", forwarder_match="", email_domain="example.com",
    disposable_domain=False, domain_seen_before=True, total_cents=5000, customer_orders=2,
    customer_average_cents=4000, shop_orders=100, shop_median_cents=4500,
    max_units_of_one_sku=1, sku_of_max_units="A-1", cvc_check="pass", postal_check="pass",
    risk_level="normal",
)


def codes(facts: Facts) -> list[str]:
    return [s.code for s in evaluate(facts, DEFAULT_RULES)]


def test_a_clean_order_raises_no_signal_and_is_approved():
    assert evaluate(CLEAN, DEFAULT_RULES) == []
    assert decide(0, [], DEFAULT_RULES.thresholds) == Decision.APPROVE


@pytest.mark.parametrize(("change", "code"), [
    ({"email_orders": 3}, "email_velocity"),
    ({"ip_orders": 5}, "ip_velocity"),
    ({"card_orders": 3}, "card_velocity"),
    ({"device_orders": 4}, "device_velocity"),
    ({"failed_attempts": 2}, "failed_attempts"),
    ({"card_country": "US"}, "country_mismatch"),
    ({"forwarder_match": "shipito"}, "freight_forwarder"),
    ({"cardholder_name": "John Smith"}, "name_mismatch"),
    ({"disposable_domain": True, "email_domain": "mailinator.com"}, "disposable_email"),
    ({"domain_seen_before": False}, "new_email_domain"),
    ({"total_cents": 12_001}, "value_vs_history"),
    ({"total_cents": 22_501, "customer_orders": 0}, "value_vs_median"),
    ({"max_units_of_one_sku": 6, "sku_of_max_units": "B-2"}, "sku_quantity"),
    ({"cvc_check": "fail"}, "cvc_check_failed"),
    ({"postal_check": "fail"}, "postal_check_failed"),
    ({"risk_level": "elevated"}, "stripe_risk_elevated"),
    ({"risk_level": "highest"}, "stripe_risk_highest"),
])
def test_each_signal_fires_alone_with_its_weight_reason_and_facts(change, code):
    [signal] = evaluate(replace(CLEAN, **change), DEFAULT_RULES)
    assert signal.code == code
    assert signal.weight == DEFAULT_RULES.signals[code].weight
    assert signal.reason.endswith(".") and len(signal.reason) > 20
    assert signal.facts


@pytest.mark.parametrize(("change", "quiet"), [
    ({"email_orders": 2}, "just under the email velocity limit"),
    ({"failed_attempts": 1}, "one decline is normal"),
    ({"card_country": ""}, "no card country known"),
    ({"cardholder_name": "Ada King Lovelace"}, "names share a word"),
    ({"total_cents": 12_000}, "exactly three times the average"),
    ({"total_cents": 99_000, "shop_orders": 19, "customer_orders": 0}, "no median yet"),
    ({"max_units_of_one_sku": 5}, "at the limit is fine"),
    ({"cvc_check": "unavailable"}, "only a failed check counts"),
])
def test_signals_stay_quiet_at_their_edges(change, quiet):
    assert codes(replace(CLEAN, **change)) == [], quiet


def test_velocity_reasons_say_how_many_and_over_what_window():
    [signal] = evaluate(replace(CLEAN, email_orders=4), DEFAULT_RULES)
    assert signal.reason == ("4 other orders from the same email in the last 24 hours "
                             "(limit 3).")
    assert signal.facts == {"email": "ada@example.com", "orders": 4, "window_hours": 24}


def test_the_score_adds_weights_and_stops_at_100():
    risky = replace(CLEAN, cvc_check="fail", risk_level="highest", disposable_domain=True)
    signals = evaluate(risky, DEFAULT_RULES)
    assert sum(s.weight for s in signals) == 135
    assert score(signals) == 100


@pytest.mark.parametrize(("points", "issues", "decision"), [
    (0, [], Decision.APPROVE), (39, [], Decision.APPROVE), (40, [], Decision.REVIEW),
    (79, [], Decision.REVIEW), (80, [], Decision.REJECT), (100, [], Decision.REJECT),
    (0, [{"code": "totals_mismatch"}], Decision.REVIEW),
    (95, [{"code": "totals_mismatch"}], Decision.REJECT),
])
def test_decisions_follow_the_thresholds_and_quality_issues(points, issues, decision):
    assert decide(points, issues, Thresholds(review=40, reject=80)) == decision


def test_a_weight_of_zero_switches_a_signal_off():
    body = DEFAULT_RULES.model_dump()
    body["signals"]["country_mismatch"]["weight"] = 0
    rules = RuleSetBody.model_validate(body)
    assert evaluate(replace(CLEAN, card_country="US"), rules) == []


def test_a_rule_set_must_name_every_signal_and_keep_its_thresholds_in_order():
    body = DEFAULT_RULES.model_dump()
    body["signals"].pop("ip_velocity")
    with pytest.raises(ValidationError, match="missing"):
        RuleSetBody.model_validate(body)
    body = DEFAULT_RULES.model_dump()
    body["thresholds"] = {"review": 90, "reject": 50}
    with pytest.raises(ValidationError, match="review threshold"):
        RuleSetBody.model_validate(body)
    body = DEFAULT_RULES.model_dump()
    body["signals"]["email_velocity"]["window_hours"] = None
    with pytest.raises(ValidationError, match="window_hours"):
        RuleSetBody.model_validate(body)
    assert set(DEFAULT_RULES.signals) == set(SIGNAL_CODES)


def test_freight_forwarders_are_recognised_in_an_address():
    assert forwarder_in("c/o Shipito, 1400 Lukens Dr") == "shipito"
    assert forwarder_in("Unter den Linden 1") == ""
