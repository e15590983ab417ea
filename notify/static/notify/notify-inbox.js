/* <notify-inbox>: the embeddable inbox bell. A framework-free custom element
   (no build step, no CDN); {% notify_bell %} renders it with this script.

   Attributes
     api         base URL of notify's API (default "/api/v1"); another origin
                 needs that origin in NOTIFY["BELL_ALLOWED_ORIGINS"] and a token
     token       a signed per-user bell token (notify.inbox.tokens.issue_token);
                 without it the session cookie of this origin is used
     label       the button's name for screen readers (default "Notifications")
     page-size   items per page of the feed (default 20)
     inbox-url   a "See all" link at the bottom of the popover (optional)

   Events (on the element): "notify-inbox:token-expired" when the token is
   refused (set a fresh one with el.setAttribute("token", ...));
   "notify-inbox:unread" with detail {count} whenever the count changes.

   Theming: CSS custom properties set on notify-inbox (or any ancestor) reach
   inside the shadow root; see THEME below and README "Embedding the inbox bell".

   Live: one server-sent events stream (/inbox/feed/events) pushes new items
   and the unread count; under a WSGI server it is long-polled (the browser
   reconnects after the server's retry delay). Paging: the feed's opaque
   cursor, fetched when the list's end scrolls into view. */
(function () {
  "use strict";

  if (!window.customElements || window.customElements.get("notify-inbox")) return;

  var THEME = [
    // Private variables: the public --notify-* ones, else light or dark defaults.
    ":host { --_fg: var(--notify-fg, #1f2328); --_bg: var(--notify-bg, #fff);",
    "  --_border: var(--notify-border, #d0d7de); --_muted: var(--notify-muted, #656d76);",
    "  --_accent: var(--notify-accent, #0969da); --_accent-fg: var(--notify-accent-fg, #fff);",
    "  --_unread-bg: var(--notify-unread-bg, rgba(9,105,218,.06)); }",
    "@media (prefers-color-scheme: dark) { :host { --_fg: var(--notify-fg, #e6edf3);",
    "  --_bg: var(--notify-bg, #161b22); --_border: var(--notify-border, #30363d);",
    "  --_muted: var(--notify-muted, #8d96a0); --_accent: var(--notify-accent, #4493f8);",
    "  --_accent-fg: var(--notify-accent-fg, #0d1117); --_unread-bg: var(--notify-unread-bg, rgba(68,147,248,.1)); } }",
    // The bell takes the page's text colour (currentColor) unless --notify-bell-fg says otherwise.
    ":host { display: inline-block; position: relative;",
    "  font: var(--notify-font, 14px/1.4 system-ui, -apple-system, 'Segoe UI', sans-serif); }",
    "* { box-sizing: border-box; }",
    ".sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden;",
    "  clip: rect(0 0 0 0); clip-path: inset(50%); white-space: nowrap; }",
    ".bell { position: relative; display: inline-flex; align-items: center; justify-content: center;",
    "  width: var(--notify-bell-size, 40px); height: var(--notify-bell-size, 40px); padding: 0;",
    "  border: 0; border-radius: 50%; background: var(--notify-bell-bg, transparent);",
    "  color: var(--notify-bell-fg, currentColor); cursor: pointer; }",
    ".bell:hover { background: var(--notify-hover-bg, rgba(127,127,127,.15)); }",
    ".item:focus-visible { outline: 2px solid var(--notify-focus, var(--_accent)); outline-offset: -2px; }",
    ".bell:focus-visible, button:focus-visible, a:focus-visible {",
    "  outline: 2px solid var(--notify-focus, var(--_accent)); outline-offset: 2px; }",
    ".bell svg { width: 60%; height: 60%; }",
    ".badge { position: absolute; top: 2px; right: 0; min-width: 18px; height: 18px; padding: 0 5px;",
    "  border-radius: 9px; background: var(--notify-badge-bg, #cf222e); color: var(--notify-badge-fg, #fff);",
    "  font-size: 11px; font-weight: 700; line-height: 18px; text-align: center; }",
    ".badge[hidden] { display: none; }",
    ".panel { position: absolute; z-index: var(--notify-z-index, 1000); top: calc(100% + 6px);",
    "  right: var(--notify-panel-right, 0); width: var(--notify-width, 380px); max-width: calc(100vw - 16px);",
    "  background: var(--_bg); color: var(--_fg);",
    "  border: 1px solid var(--_border); border-radius: var(--notify-radius, 10px);",
    "  box-shadow: var(--notify-shadow, 0 8px 24px rgba(31,35,40,.18)); overflow: hidden; }",
    ".panel[hidden] { display: none; }",
    "header { display: flex; align-items: center; gap: 8px; padding: 10px 12px;",
    "  border-bottom: 1px solid var(--_border); }",
    "h2 { flex: 1; margin: 0; font-size: 1em; font-weight: 600; }",
    ".link-button { border: 0; background: none; padding: 4px 6px; border-radius: 6px; font: inherit;",
    "  font-size: .9em; color: var(--_accent); cursor: pointer; }",
    ".link-button:hover { background: var(--notify-hover-bg, rgba(127,127,127,.15)); }",
    ".link-button[aria-disabled=true] { color: var(--_muted); cursor: default; background: none; }",
    ".filters { display: flex; gap: 4px; padding: 6px 12px; border-bottom: 1px solid var(--_border); }",
    ".filters button[aria-pressed=true] { background: var(--_accent); color: var(--_accent-fg); }",
    ".list { list-style: none; margin: 0; padding: 0; max-height: var(--notify-max-height, 420px); overflow-y: auto; }",
    ".item { position: relative; padding: 10px 12px 10px 26px; border-bottom: 1px solid var(--_border); }",
    ".item.unread { background: var(--_unread-bg); }",
    ".item.unread::before { content: ''; position: absolute; left: 10px; top: 16px; width: 8px; height: 8px;",
    "  border-radius: 50%; background: var(--_accent); }",
    ".title { margin: 0; font-weight: 600; overflow-wrap: anywhere; }",
    ".title a { color: inherit; text-decoration: none; } .title a:hover { text-decoration: underline; }",
    ".body { margin: 2px 0 0; overflow-wrap: anywhere; }",
    ".meta { margin: 4px 0 0; font-size: .85em; color: var(--_muted); }",
    ".row { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 6px; }",
    ".action { display: inline-block; padding: 3px 10px; border-radius: var(--notify-button-radius, 6px);",
    "  background: var(--_accent); color: var(--_accent-fg); text-decoration: none; font-size: .9em; }",
    ".action:hover { filter: brightness(1.1); }",
    ".empty, .status-line { padding: 24px 12px; text-align: center; color: var(--_muted); }",
    ".status-line { padding: 8px 12px; font-size: .85em; }",
    "footer { padding: 8px 12px; text-align: center; }",
    "footer a { color: var(--_accent); }"
  ].join("\n");

  var BELL_SVG =
    '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path fill="currentColor" ' +
    'd="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 ' +
    '1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2Z"/></svg>';

  var counter = 0;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (attrs[name] !== null && attrs[name] !== undefined) node.setAttribute(name, attrs[name]);
    });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function cookie(name) {
    var match = document.cookie.match(new RegExp("(?:^|;\\s*)" + name + "=([^;]+)"));
    return match ? decodeURIComponent(match[1]) : "";
  }

  function safeUrl(url) {
    // The server already allows only http(s) and same-site paths; check again.
    if (typeof url !== "string" || !url) return "";
    if (/^\/(?!\/)/.test(url) || /^https?:\/\//i.test(url)) return url;
    return "";
  }

  function ago(iso) {
    var seconds = (Date.now() - new Date(iso).getTime()) / 1000;
    var format = window.Intl && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;
    if (!format || isNaN(seconds)) return "";
    if (seconds < 60) return format.format(0, "second");
    if (seconds < 3600) return format.format(-Math.floor(seconds / 60), "minute");
    if (seconds < 86400) return format.format(-Math.floor(seconds / 3600), "hour");
    return format.format(-Math.floor(seconds / 86400), "day");
  }

  class NotifyInbox extends HTMLElement {
    static get observedAttributes() { return ["token", "api"]; }

    constructor() {
      super();
      this.uid = "notify-inbox-" + (++counter);
      this.items = new Map();
      this.cursor = null;
      this.loading = false;
      this.unread = 0;
      this.filter = "all";
      this.source = null;
      this.liveCursor = null;
      var root = this.attachShadow({ mode: "open" });
      root.innerHTML = "<style>" + THEME + "</style>";
      this.button = el("button", {
        type: "button", class: "bell", part: "bell",
        "aria-haspopup": "dialog", "aria-expanded": "false", "aria-controls": "panel"
      });
      this.button.innerHTML = BELL_SVG;
      this.badge = el("span", { class: "badge", part: "badge", "aria-hidden": "true", hidden: "" });
      this.button.appendChild(this.badge);
      this.status = el("span", { class: "sr-only", role: "status", "aria-live": "polite", "aria-atomic": "true" });
      this.panel = el("div", { class: "panel", part: "panel", id: "panel", role: "dialog", "aria-labelledby": "heading", hidden: "" });
      var header = el("header");
      header.appendChild(el("h2", { id: "heading" }, this.label()));
      this.readAll = el("button", { type: "button", class: "link-button", "data-action": "read-all" }, "Mark all read");
      header.appendChild(this.readAll);
      this.panel.appendChild(header);
      var filters = el("div", { class: "filters", role: "group", "aria-label": "Show" });
      this.filterButtons = [["all", "All"], ["unread", "Unread"], ["archived", "Archived"]].map(function (pair) {
        var button = el("button", { type: "button", class: "link-button", "data-filter": pair[0], "aria-pressed": String(pair[0] === "all") }, pair[1]);
        filters.appendChild(button);
        return button;
      });
      this.panel.appendChild(filters);
      this.list = el("ul", { class: "list", role: "list", "aria-labelledby": "heading", tabindex: "-1" });
      this.panel.appendChild(this.list);
      this.empty = el("p", { class: "empty", hidden: "" }, "You're all caught up.");
      this.panel.appendChild(this.empty);
      this.more = el("p", { class: "status-line", "aria-hidden": "true", hidden: "" }, "Loading…");
      this.panel.appendChild(this.more);
      this.footer = el("footer", { hidden: "" });
      this.panel.appendChild(this.footer);
      root.appendChild(this.button);
      root.appendChild(this.status);
      root.appendChild(this.panel);

      this.onDocumentClick = this.onDocumentClick.bind(this);
      this.button.addEventListener("click", this.toggle.bind(this));
      this.panel.addEventListener("keydown", this.onKeydown.bind(this));
      this.panel.addEventListener("click", this.onPanelClick.bind(this));
      this.list.addEventListener("scroll", this.onScroll.bind(this));
    }

    label() { return this.getAttribute("label") || "Notifications"; }
    api() { return (this.getAttribute("api") || "/api/v1").replace(/\/+$/, ""); }
    token() { return this.getAttribute("token") || ""; }
    pageSize() { return Math.max(1, Math.min(100, parseInt(this.getAttribute("page-size"), 10) || 20)); }

    connectedCallback() {
      this.button.setAttribute("aria-label", this.label());
      var inbox = safeUrl(this.getAttribute("inbox-url") || "");
      if (inbox) {
        this.footer.textContent = "";
        this.footer.appendChild(el("a", { href: inbox }, "See all notifications"));
        this.footer.hidden = false;
      }
      document.addEventListener("click", this.onDocumentClick, true);
      this.reload();
    }

    disconnectedCallback() {
      document.removeEventListener("click", this.onDocumentClick, true);
      this.closeStream();
    }

    attributeChangedCallback(name, before, after) {
      if (before === after || !this.isConnected || before === null) return;
      this.closeStream(); // a new token or API: a new stream, from a fresh first page
      this.liveCursor = null;
      this.reload();
    }

    // -- talking to the API -------------------------------------------------------

    request(method, path) {
      var headers = { Accept: "application/json" };
      // keepalive: a "read" sent as a link is followed must survive the navigation.
      var init = { method: method, headers: headers, credentials: "same-origin", keepalive: method !== "GET" };
      if (this.token()) {
        headers.Authorization = "Bearer " + this.token();
        init.credentials = "omit"; // a token never travels with cookies
      } else if (method !== "GET") {
        headers["X-CSRFToken"] = cookie("csrftoken");
      }
      var self = this;
      return fetch(this.api() + path, init).then(function (response) {
        if (response.status === 401 && self.token()) {
          self.dispatchEvent(new CustomEvent("notify-inbox:token-expired", { bubbles: true, composed: true }));
        }
        return response.json().then(function (body) {
          if (!response.ok) throw new Error(body.message || response.statusText);
          return body;
        });
      });
    }

    query(cursor) {
      var params = new URLSearchParams({ limit: String(this.pageSize()) });
      if (this.filter === "unread") params.set("unread", "true");
      if (this.filter === "archived") params.set("archived", "true");
      if (cursor) params.set("cursor", cursor);
      return "/inbox/feed?" + params.toString();
    }

    reload() {
      this.generation = (this.generation || 0) + 1; // answers to older requests are dropped
      this.loading = false;
      this.items.clear();
      this.list.textContent = "";
      this.cursor = null;
      this.done = false;
      var self = this;
      return this.loadPage().then(function () {
        if (!self.source) self.openStream();
      });
    }

    loadPage() {
      if (this.loading || this.done) return Promise.resolve();
      this.loading = true;
      this.more.hidden = false;
      var self = this;
      var generation = this.generation;
      return this.request("GET", this.query(this.cursor)).then(function (body) {
        if (generation !== self.generation) return;
        if (body.live_cursor && !self.liveCursor) self.liveCursor = body.live_cursor;
        body.items.forEach(function (item) { self.put(item, false); });
        self.cursor = body.next_cursor;
        self.done = !body.next_cursor;
        self.setUnread(body.counts.unread, false);
      }).catch(function (error) {
        self.announce("Notifications could not be loaded: " + error.message);
      }).then(function () {
        if (generation !== self.generation) return;
        self.loading = false;
        self.more.hidden = true;
        self.refreshEmpty();
        // A short first page may not fill the list: keep going until it scrolls.
        if (!self.done && !self.panel.hidden && self.list.scrollHeight <= self.list.clientHeight) {
          return self.loadPage();
        }
      });
    }

    openStream() {
      if (!window.EventSource) return;
      var params = new URLSearchParams();
      if (this.liveCursor) params.set("after", this.liveCursor);
      if (this.token()) params.set("token", this.token());
      var source = new EventSource(this.api() + "/inbox/feed/events?" + params.toString());
      var self = this;
      source.addEventListener("item", function (event) {
        var item = JSON.parse(event.data);
        if (self.items.has(item.id) || !self.shows(item)) return;
        self.put(item, true);
        self.refreshEmpty();
        self.announce("New notification: " + item.title);
      });
      source.addEventListener("unread", function (event) {
        self.setUnread(JSON.parse(event.data).unread_count, true);
      });
      source.addEventListener("error", function () {
        // A refused stream is not retried by the browser: with a token, it expired.
        if (source.readyState === EventSource.CLOSED && self.token()) {
          self.source = null;
          self.dispatchEvent(new CustomEvent("notify-inbox:token-expired", { bubbles: true, composed: true }));
        }
      });
      this.source = source;
    }

    closeStream() {
      if (this.source) this.source.close();
      this.source = null;
    }

    shows(item) {
      if (this.filter === "unread") return !item.read && !item.archived;
      if (this.filter === "archived") return item.archived;
      return !item.archived;
    }

    // -- rendering ------------------------------------------------------------------

    put(item, onTop) {
      var node = this.render(item);
      var old = this.items.get(item.id);
      this.items.set(item.id, node);
      if (old) {
        old.replaceWith(node);
      } else if (onTop) {
        this.list.insertBefore(node, this.list.firstChild);
      } else {
        this.list.appendChild(node);
      }
      this.rove(this.list.querySelector(".item[tabindex='0']") || node);
    }

    render(item) {
      var li = el("li", {
        class: "item" + (item.read ? "" : " unread"), part: "item", "data-id": String(item.id),
        tabindex: "-1", "aria-labelledby": this.uid + "-t" + item.id
      });
      var title = el("p", { class: "title", id: this.uid + "-t" + item.id });
      var url = safeUrl(item.url);
      if (!item.read) title.appendChild(el("span", { class: "sr-only" }, "Unread: "));
      if (url) title.appendChild(el("a", { href: url, "data-action": "open" }, item.title));
      else title.appendChild(document.createTextNode(item.title));
      li.appendChild(title);
      if (item.body) li.appendChild(el("p", { class: "body" }, item.body));
      var meta = el("p", { class: "meta" });
      meta.appendChild(el("time", { datetime: item.created_at, title: new Date(item.created_at).toLocaleString() }, ago(item.created_at)));
      if (item.category_name) meta.appendChild(document.createTextNode(" · " + item.category_name));
      li.appendChild(meta);
      var row = el("div", { class: "row" });
      (item.actions || []).forEach(function (action) {
        var href = safeUrl(action.url);
        if (href) row.appendChild(el("a", { class: "action", part: "action", href: href, "data-action": "open" }, action.label));
      });
      if (!item.archived) {
        row.appendChild(el("button", {
          type: "button", class: "link-button", "data-action": item.read ? "unread" : "read"
        }, item.read ? "Mark unread" : "Mark read"));
      }
      row.appendChild(el("button", {
        type: "button", class: "link-button", "data-action": item.archived ? "unarchive" : "archive"
      }, item.archived ? "Unarchive" : "Archive"));
      li.appendChild(row);
      return li;
    }

    setUnread(count, announce) {
      var changed = count !== this.unread;
      this.unread = count;
      this.badge.textContent = count > 99 ? "99+" : String(count);
      this.badge.hidden = count === 0;
      this.button.setAttribute("aria-label", this.label() + (count ? ", " + count + " unread" : ""));
      // aria-disabled, not disabled: a disabled button would drop the focus.
      this.readAll.setAttribute("aria-disabled", String(count === 0));
      if (changed) {
        if (announce) this.announce(count === 1 ? "1 unread notification" : count + " unread notifications");
        this.dispatchEvent(new CustomEvent("notify-inbox:unread", { detail: { count: count }, bubbles: true, composed: true }));
      }
    }

    announce(text) {
      // Cleared first so the same text is read again.
      var status = this.status;
      status.textContent = "";
      window.setTimeout(function () { status.textContent = text; }, 50);
    }

    refreshEmpty() {
      this.empty.hidden = this.items.size > 0 || this.loading;
      this.empty.textContent = this.filter === "archived" ? "Nothing archived." : "You're all caught up.";
    }

    // -- opening, closing, keyboard --------------------------------------------------

    toggle() {
      if (this.panel.hidden) this.open();
      else this.close(true);
    }

    open() {
      this.panel.hidden = false;
      this.button.setAttribute("aria-expanded", "true");
      var first = this.list.querySelector(".item[tabindex='0']");
      (first || this.panel.querySelector("button:not([disabled])")).focus();
      if (!this.done && this.list.scrollHeight <= this.list.clientHeight) this.loadPage();
    }

    close(returnFocus) {
      if (this.panel.hidden) return;
      this.panel.hidden = true;
      this.button.setAttribute("aria-expanded", "false");
      if (returnFocus) this.button.focus();
    }

    onDocumentClick(event) {
      if (!this.panel.hidden && event.composedPath().indexOf(this) === -1) this.close(false);
    }

    focusables() {
      return Array.prototype.filter.call(
        this.panel.querySelectorAll("a[href], button:not([disabled]), [tabindex='0']"),
        function (node) { return node.offsetParent !== null; }
      );
    }

    rove(target) {
      // Roving tabindex: one item is in the tab order; arrows move between items.
      Array.prototype.forEach.call(this.list.querySelectorAll(".item"), function (node) {
        node.setAttribute("tabindex", node === target ? "0" : "-1");
      });
    }

    onKeydown(event) {
      if (event.key === "Escape") {
        event.preventDefault();
        this.close(true);
        return;
      }
      var items = Array.prototype.slice.call(this.list.querySelectorAll(".item"));
      var current = event.target.closest ? event.target.closest(".item") : null;
      var index = items.indexOf(current);
      var next = null;
      if (event.key === "ArrowDown" && index >= 0) next = items[Math.min(items.length - 1, index + 1)];
      if (event.key === "ArrowUp" && index >= 0) next = items[Math.max(0, index - 1)];
      if (event.key === "Home" && index >= 0) next = items[0];
      if (event.key === "End" && index >= 0) next = items[items.length - 1];
      if (next) {
        event.preventDefault();
        this.rove(next);
        next.focus();
        if (next === items[items.length - 1]) this.loadPage();
        return;
      }
      if (event.key === "Tab") { // keep focus inside the popover while it is open
        var nodes = this.focusables();
        if (!nodes.length) return;
        var active = this.shadowRoot.activeElement;
        var first = nodes[0], last = nodes[nodes.length - 1];
        if (event.shiftKey && active === first) { event.preventDefault(); last.focus(); }
        else if (!event.shiftKey && active === last) { event.preventDefault(); first.focus(); }
      }
    }

    onScroll() {
      var list = this.list;
      if (list.scrollTop + list.clientHeight >= list.scrollHeight - 40) this.loadPage();
    }

    onPanelClick(event) {
      var target = event.target.closest("[data-action], [data-filter]");
      if (!target) return;
      if (target.dataset.filter) {
        this.filter = target.dataset.filter;
        this.filterButtons.forEach(function (button) {
          button.setAttribute("aria-pressed", String(button === target));
        });
        this.reload();
        return;
      }
      var action = target.dataset.action;
      var li = target.closest(".item");
      var id = li ? Number(li.dataset.id) : null;
      var self = this;
      if (action === "open") {
        if (li && li.classList.contains("unread")) this.change(id, "read"); // following a link reads it
        return;
      }
      if (action === "read-all") {
        if (this.unread === 0) return;
        this.request("POST", "/inbox/feed/read-all").then(function (body) {
          self.setUnread(body.counts.unread, true);
          return self.reload();
        }).catch(function (error) { self.announce(error.message); });
        return;
      }
      this.change(id, action);
    }

    change(id, action) {
      var self = this;
      return this.request("POST", "/inbox/feed/" + id + "/" + action).then(function (body) {
        var item = body.item;
        var node = self.items.get(item.id);
        var hadFocus = node && node.contains(self.shadowRoot.activeElement);
        if (!self.shows(item)) {
          var sibling = node && (node.nextElementSibling || node.previousElementSibling);
          if (node) node.remove();
          self.items.delete(item.id);
          if (hadFocus) (sibling || self.list).focus();
          if (sibling) self.rove(sibling);
          self.announce(action === "archive" ? "Archived." : "Done.");
        } else {
          self.put(item, false);
          if (hadFocus) self.items.get(item.id).focus();
        }
        self.setUnread(body.counts.unread, true);
        self.refreshEmpty();
      }).catch(function (error) { self.announce(error.message); });
    }
  }

  window.customElements.define("notify-inbox", NotifyInbox);
})();
