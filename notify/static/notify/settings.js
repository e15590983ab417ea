/* The settings page works without this file; with it:
   - the error summary takes the focus, so screen readers announce it, and
     its links move the focus to their fields;
   - a user with no saved settings gets the browser's time zone filled in;
   - a category set to "Off" dims its channel cells;
   - the "add an address" form shows the hint of the chosen type only;
   - removing an address asks first. */
(function () {
  "use strict";
  var summary = document.getElementById("error-summary");
  if (summary) {
    summary.focus();
    // A link in the summary moves the focus to its field, not only the view.
    summary.addEventListener("click", function (event) {
      var link = event.target.closest("a[href^='#']");
      var target = link && document.getElementById(link.getAttribute("href").slice(1));
      if (!target) return;
      event.preventDefault();
      target.scrollIntoView({ block: "center" });
      if (target.tabIndex < 0 && !/^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(target.tagName)) {
        target.setAttribute("tabindex", "-1");
      }
      target.focus();
    });
  }

  var zoneInput = document.getElementById("id_timezone");
  if (zoneInput && zoneInput.hasAttribute("data-guess")) {
    var zone = "";
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
    var known = Array.prototype.some.call(
      document.querySelectorAll("#timezone-list option"),
      function (option) { return option.value === zone; }
    );
    if (zone && known && zone !== zoneInput.value) {
      zoneInput.value = zone;
      var note = document.getElementById("timezone-guess");
      if (note) note.textContent = "Filled in from your browser: " + zone + ". Save to keep it.";
    }
  }

  Array.prototype.forEach.call(document.querySelectorAll("select[data-mode]"), function (select) {
    select.addEventListener("change", function () {
      var row = select.closest("tr");
      if (row) row.classList.toggle("is-off", select.value === "off");
    });
  });

  var kind = document.getElementById("id_kind");
  var hints = document.querySelectorAll(".kind-hints [data-kind]");
  function showHint() {
    Array.prototype.forEach.call(hints, function (hint) {
      hint.hidden = hint.getAttribute("data-kind") !== kind.value;
    });
    var address = document.getElementById("id_address");
    if (address) {
      address.setAttribute("inputmode", kind.value === "phone" ? "tel" : kind.value === "email" ? "email" : "url");
      address.setAttribute("autocomplete", kind.value === "phone" ? "tel" : kind.value === "email" ? "email" : "off");
    }
  }
  if (kind && hints.length) {
    kind.addEventListener("change", showHint);
    showHint();
  }

  Array.prototype.forEach.call(document.querySelectorAll("form[data-confirm]"), function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });
})();
