/* "Turn on browser notifications" on the settings page.
 *
 * GET /api/v1/devices says whether a Web Push channel is configured (its
 * applicationServerKey); the button then registers the service worker,
 * asks for permission, subscribes and registers the subscription with
 * POST /api/v1/devices. Turning off unsubscribes and DELETEs it. */
"use strict";

(function () {
  const control = document.getElementById("browser-push");
  if (!control || !("serviceWorker" in navigator) || !("PushManager" in window)) return;
  const button = control.querySelector("button");
  const status = control.querySelector(".push-status");
  const api = control.dataset.devicesUrl;
  const workerUrl = control.dataset.workerUrl;
  let key = null;

  function csrf() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function say(text, on) {
    status.textContent = text;
    button.textContent = on ? "Turn off browser notifications" : "Turn on browser notifications";
    button.setAttribute("aria-pressed", on ? "true" : "false");
    control.dataset.state = on ? "on" : "off";
  }

  function keyBytes(base64url) {
    const padded = base64url.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((base64url.length + 3) % 4);
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  }

  async function activeRegistration() {
    const scope = workerUrl.replace(/[^/]*$/, "");
    const registration = await navigator.serviceWorker.register(workerUrl, { scope });
    const worker = registration.installing || registration.waiting || registration.active;
    if (worker && worker.state !== "activated") {
      await new Promise((resolve) => {
        worker.addEventListener("statechange", () => worker.state === "activated" && resolve());
      });
    }
    return registration;
  }

  async function send(method, subscription) {
    const response = await fetch(api, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify({ kind: "webpush", subscription: subscription.toJSON() }),
    });
    if (!response.ok && response.status !== 404) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.message || `HTTP ${response.status}`);
    }
  }

  async function turnOn() {
    const permission = await Notification.requestPermission();
    if (permission !== "granted") {
      say("Your browser blocks notifications from this site: allow them in its site settings.", false);
      return;
    }
    const registration = await activeRegistration();
    const subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: keyBytes(key),
    });
    await send("POST", subscription);
    say("Browser notifications are on for this browser.", true);
  }

  async function turnOff() {
    const registration = await navigator.serviceWorker.getRegistration(workerUrl.replace(/[^/]*$/, ""));
    const subscription = registration && (await registration.pushManager.getSubscription());
    if (subscription) {
      await send("DELETE", subscription);
      await subscription.unsubscribe();
    }
    say("Browser notifications are off.", false);
  }

  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await (control.dataset.state === "on" ? turnOff() : turnOn());
    } catch (error) {
      say(`Could not change browser notifications: ${error.message}`, control.dataset.state === "on");
    } finally {
      button.disabled = false;
    }
  });

  fetch(api, { credentials: "same-origin" })
    .then((response) => (response.ok ? response.json() : null))
    .then(async (data) => {
      key = data && data.webpush && data.webpush.application_server_key;
      if (!key) return; // no Web Push channel configured: the control stays hidden
      control.hidden = false;
      const registration = await navigator.serviceWorker.getRegistration(workerUrl.replace(/[^/]*$/, ""));
      const subscription = registration && (await registration.pushManager.getSubscription());
      say(subscription ? "Browser notifications are on for this browser." : "Get notifications in this browser, even when this page is closed.", Boolean(subscription));
    })
    .catch(() => {});
})();
