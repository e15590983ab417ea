// Previews that follow the form while it is edited, before anything is saved.
// A region marked data-live-preview="<url>" names the form it follows
// (data-form="<form id>") and how to ask (data-method="get" sends the whole
// form as a query, like its Preview button; "post" sends it with the CSRF token).
// After a pause in typing (400 ms) the answer's element with the region's id
// replaces the region; an older answer arriving late is ignored.
(function () {
  "use strict";
  var DELAY = 400;

  function follow(region) {
    var form = document.getElementById(region.dataset.form);
    if (!form) return;
    var url = region.dataset.livePreview;
    var method = (region.dataset.method || "get").toLowerCase();
    var timer = null;
    var asked = 0;

    function ask() {
      var mine = ++asked;
      var data = new FormData(form);
      var request;
      if (method === "get") {
        var query = new URLSearchParams(data);
        query.set("_preview", "1");
        request = fetch(url + "?" + query.toString(), { credentials: "same-origin" });
      } else {
        request = fetch(url, {
          method: "POST",
          body: data,
          credentials: "same-origin",
          headers: { "X-CSRFToken": data.get("csrfmiddlewaretoken") || "" },
        });
      }
      region.setAttribute("aria-busy", "true");
      request
        .then(function (response) { return response.text(); })
        .then(function (html) {
          if (mine !== asked) return; // a newer question is on its way
          var answer = new DOMParser().parseFromString(html, "text/html").getElementById(region.id);
          if (answer) region.innerHTML = answer.innerHTML;
          region.dataset.updated = String(mine);
        })
        .catch(function () {})
        .finally(function () { if (mine === asked) region.removeAttribute("aria-busy"); });
    }

    function later() {
      clearTimeout(timer);
      timer = setTimeout(ask, DELAY);
    }
    form.addEventListener("input", later);
    form.addEventListener("change", later);
  }

  function start() {
    document.querySelectorAll("[data-live-preview]").forEach(follow);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
