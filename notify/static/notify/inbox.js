/* The inbox page, enhanced: mark read/unread/all without reloading, and new
   notifications pushed live over server-sent events (/inbox/events). Without
   this script the forms still work (plain POSTs that redirect back). */
(function () {
  "use strict";

  var list = document.getElementById("inbox-list");
  if (!list) return;
  var badge = document.getElementById("unread-badge");
  var readAll = document.querySelector("form[data-inbox-action='read-all']");
  var empty = document.getElementById("inbox-empty");
  var announcer = document.getElementById("inbox-announcer");

  function setUnread(count) {
    if (badge) {
      badge.textContent = "";
      var label = document.createElement("span");
      label.className = "visually-hidden";
      label.textContent = "unread:";
      badge.appendChild(label);
      badge.appendChild(document.createTextNode(String(count)));
      badge.hidden = count === 0;
    }
    document.querySelectorAll("[data-unread-count]").forEach(function (el) {
      el.textContent = String(count);
    });
    if (readAll) readAll.hidden = count === 0;
  }

  function fragment(html) {
    var template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content;
  }

  function replaceEntry(old, html) {
    var entry = fragment(html).firstElementChild;
    old.replaceWith(entry);
    return entry;
  }

  /* Forms: the same POST over fetch, answered in JSON with the entry re-rendered. */
  document.addEventListener("submit", function (event) {
    var form = event.target.closest("form[data-inbox-action]");
    if (!form || !window.fetch) return;
    event.preventDefault();
    var button = form.querySelector("button");
    if (button) button.disabled = true;
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        setUnread(data.unread_count);
        if (form.dataset.inboxAction === "read-all") {
          list.textContent = "";
          list.appendChild(fragment(data.html));
          announce("All notifications marked read.");
          return;
        }
        var entry = replaceEntry(form.closest("li.inbox-item"), data.html);
        var next = entry.querySelector(".inbox-toggle button");
        if (next) next.focus();
        announce(data.read ? "Marked read." : "Marked unread.");
      })
      .catch(function () {
        form.submit(); /* let the server answer the plain way */
      });
  });

  function announce(text) {
    if (announcer) announcer.textContent = text;
  }

  /* Live: each "item" event carries one entry as the page renders it. */
  if (!window.EventSource || !list.dataset.events) return;
  var source = new EventSource(list.dataset.events);
  source.addEventListener("open", function () {
    list.dataset.live = "on";
  });
  source.addEventListener("error", function () {
    list.dataset.live = "reconnecting"; /* the browser retries by itself */
  });
  source.addEventListener("item", function (event) {
    var data = JSON.parse(event.data);
    if (list.hasAttribute("data-live-insert")) {
      var selector = '[data-id="' + data.id + '"]';
      if (data.group) selector += ', [data-group="' + CSS.escape(data.group) + '"]';
      list.querySelectorAll(selector).forEach(function (old) {
        old.remove();
      });
      var entry = fragment(data.html).firstElementChild;
      entry.classList.add("is-new");
      list.insertBefore(entry, list.firstElementChild);
      if (empty) empty.hidden = true;
    }
    announce("New notification: " + data.title);
  });
  source.addEventListener("unread", function (event) {
    setUnread(JSON.parse(event.data).unread_count);
  });
})();
