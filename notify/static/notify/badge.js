/* The header's unread badge, live on every page but the inbox (whose own
   script, inbox.js, keeps it): one server-sent events connection to
   /inbox/events; its "unread" events carry the count. */
(function () {
  "use strict";

  var badge = document.getElementById("unread-badge");
  if (!badge || !window.EventSource || document.getElementById("inbox-list")) return;

  var source = new EventSource(badge.dataset.events || "/inbox/events");
  source.addEventListener("unread", function (event) {
    var count = JSON.parse(event.data).unread_count;
    badge.textContent = "";
    var label = document.createElement("span");
    label.className = "visually-hidden";
    label.textContent = "unread:";
    badge.appendChild(label);
    badge.appendChild(document.createTextNode(String(count)));
    badge.hidden = count === 0;
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
