// 3-D Secure: Stripe.js runs the bank's check in this page, then we tell our server to look.
(function () {
  "use strict";
  var form = document.getElementById("authenticate-form");
  if (!form || typeof Stripe === "undefined") { return; }
  var status = document.getElementById("authenticate-status");
  var stripe = Stripe(form.dataset.stripeKey);
  stripe.confirmCardPayment(form.dataset.clientSecret).then(function () {
    status.textContent = "Checking the result…";
    HTMLFormElement.prototype.submit.call(form);
  }, function () {
    HTMLFormElement.prototype.submit.call(form);
  });
})();
