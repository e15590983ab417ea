/* notify's service worker for Web Push (channels.webpush).
 *
 * The push service delivers the payload the channel encrypted; the browser has
 * decrypted it by the time it gets here: {title, body, url, badge, delivery_id}.
 * A click opens the deep link (the inbox when the event had none). */
"use strict";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (error) {
    data = { body: event.data ? event.data.text() : "" };
  }
  const title = data.title || "New notification";
  event.waitUntil(
    Promise.all([
      self.registration.showNotification(title, {
        body: data.body || "",
        tag: data.delivery_id ? `notify-${data.delivery_id}` : undefined,
        data: { url: data.url || "/inbox/" },
      }),
      // The app badge (where the browser has one): the unread inbox count.
      typeof data.badge === "number" && self.navigator.setAppBadge
        ? self.navigator.setAppBadge(data.badge).catch(() => {})
        : Promise.resolve(),
    ]),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = (event.notification.data && event.notification.data.url) || "/inbox/";
  event.waitUntil(self.clients.openWindow(url));
});
