// digitlab's service worker for a static site (`digitlab site` writes it as DIR/sw.js, with VERSION and
// FILES above this line): the page's files are kept at the first visit, so the page opens and trains
// offline afterwards; MNIST is kept by the page itself (mnist.js, checked before it is kept).
// A new site (another VERSION) replaces the kept files when the page is next opened online.
const CACHE = `digitlab-site-${VERSION}`;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((name) => name.startsWith("digitlab-site-") && name !== CACHE).map((name) => caches.delete(name))))
      .then(() => self.clients.claim())
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin || url.pathname.includes("/static/mnist/")) return;
  // The kept file first (the page ignores its query: ?model=... is a setting, not another page).
  event.respondWith(
    caches.match(event.request, { ignoreSearch: true }).then((kept) => kept || fetch(event.request))
  );
});
