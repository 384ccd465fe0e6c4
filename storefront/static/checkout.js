// Checkout: card details go from this page straight to Stripe.js, which returns a token id;
// only that id is posted to our server with the rest of the form.
(function () {
  "use strict";
  var form = document.getElementById("checkout-form");
  if (!form || typeof Stripe === "undefined") { return; }
  var stripe = Stripe(form.dataset.stripeKey);
  var card = stripe.elements().create("card");
  card.mount("#card-element");
  var button = document.getElementById("pay-button");
  var errorBox = document.getElementById("payment-error");

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    button.disabled = false;
    button.textContent = "Pay";
  }

  form.addEventListener("submit", function (event) {
    // "Apply" next to the discount code posts the form as it is: no card needed for that.
    if (event.submitter && event.submitter.id === "apply-discount") { return; }
    event.preventDefault();
    if (button.disabled) { return; }
    button.disabled = true;
    button.textContent = "Processing…";
    errorBox.hidden = true;
    stripe.createToken(card).then(function (result) {
      if (result.error || !result.token) {
        var message = result.error && result.error.message;
        showError(message || "Check your card details and try again.");
        return;
      }
      form.elements.payment_token.value = result.token.id;
      HTMLFormElement.prototype.submit.call(form);
    }, function () { showError("We could not reach our payment provider. Please try again."); });
  });

  // Keep the summary's shipping, VAT and total right as the country or method changes.
  function refreshTotals() {
    var method = form.querySelector("input[name=shipping_method]:checked");
    var params = new URLSearchParams({
      country: form.elements.country.value,
      shipping_method: method ? method.value : "",
      discount_code: form.elements.discount_code ? form.elements.discount_code.value : "",
      email: form.elements.email.value
    });
    fetch("/checkout/summary?" + params.toString(), { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (totals) {
        if (!totals) { return; }
        ["subtotal", "shipping", "tax", "total"].forEach(function (key) {
          document.getElementById("summary-" + key).textContent = totals[key];
        });
        document.getElementById("summary-tax-rate").textContent = totals.tax_rate;
        var discount = document.getElementById("summary-discount");
        if (discount) {
          discount.textContent = totals.discount;
          discount.hidden = !totals.discount;
          document.getElementById("summary-discount-label").hidden = !totals.discount;
        }
      });
  }
  form.elements.country.addEventListener("change", refreshTotals);
  form.querySelectorAll("input[name=shipping_method]").forEach(function (input) {
    input.addEventListener("change", refreshTotals);
  });
})();
