// The example shop's tracking, with either SDK a front-end team already uses, both vendored in
// vendor/ and sent to Clicktrail instead of their vendor's servers:
//
// - ?sdk=segment (the default): Segment's Analytics.js 2.0. Two settings make it send here: the
//   Segment.io integration's apiHost and protocol (where calls go), and cdnSettings given inline
//   (so the library never asks Segment's CDN for a source's settings). window.analytics._cdn,
//   set before the library loads, makes it fetch any code it loads later from vendor/ as well.
// - ?sdk=rudderstack: RudderStack's JavaScript SDK v3 (its bundled build, no plugins fetched),
//   with Clicktrail as its data plane and as its control plane (configUrl: /sourceConfig).
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const host = (params.get("host") || "http://127.0.0.1:8000").replace(/\/+$/, "");
  const writeKey = params.get("writeKey") || "";
  const sdk = params.get("sdk") === "rudderstack" ? "rudderstack" : "segment";
  const $ = (id) => document.getElementById(id);

  // Each SDK behind the same three calls, each resolving to {event, failed} once the SDK has
  // taken the call (Segment's: once delivered; RudderStack's: once queued for delivery).
  const SDKS = {
    segment: {
      name: "Segment's Analytics.js 2.0",
      script: "vendor/analytics-next/bundles/index.js",
      before() {
        window.analytics = { _cdn: new URL("vendor", location.href).href };
      },
      start() {
        const api = new URL(host);
        const segmentio = { apiHost: `${api.host}/v1`, protocol: api.protocol.replace(":", "") };
        const analytics = window.AnalyticsNext.AnalyticsBrowser.load(
          {
            writeKey,
            cdnSettings: {
              integrations: { "Segment.io": { apiKey: writeKey, ...segmentio } },
              // The library's own usage metrics would go to Segment: none are sent.
              metrics: { sampleRate: 0 },
            },
          },
          { integrations: { "Segment.io": segmentio } },
        );
        const taken = (ctx) => ({ event: ctx.event, failed: Boolean(ctx.failedDelivery?.()) });
        return {
          page: (category, name) => analytics.page(category, name).then(taken),
          track: (event, properties) => analytics.track(event, properties).then(taken),
          identify: (userId, traits) => analytics.identify(userId, traits).then(taken),
        };
      },
    },
    rudderstack: {
      name: "RudderStack's JavaScript SDK v3",
      script: "vendor/rudderstack-analytics-js/index.js",
      before() {},
      start() {
        const analytics = new window.rudderanalytics.RudderAnalytics();
        analytics.load(writeKey, host, { configUrl: host, logLevel: "ERROR" });
        const taken = (call) =>
          new Promise((resolve) => call((event) => resolve({ event, failed: false })));
        return {
          page: (category, name) => taken((done) => analytics.page(category, name, {}, {}, done)),
          track: (event, properties) =>
            taken((done) => analytics.track(event, properties, {}, done)),
          identify: (userId, traits) =>
            taken((done) => analytics.identify(userId, traits, {}, done)),
        };
      },
    },
  };

  function sent(label, { event, failed }) {
    const item = document.createElement("li");
    item.dataset.type = event.type;
    item.dataset.messageId = event.messageId;
    item.className = failed ? "failed" : "";
    item.append(`${event.type} ${label} `);
    const id = document.createElement("code");
    id.textContent = failed ? `${event.messageId}: not delivered` : event.messageId;
    item.append(id);
    $("sent").prepend(item);
  }

  function start() {
    const analytics = SDKS[sdk].start();
    analytics.page("Shop", "Home").then((taken) => sent("Shop / Home", taken));
    $("view").addEventListener("click", () => {
      analytics
        .track("Product Viewed", {
          product_id: "mug-blue", name: "Blue mug", price: 12.5, currency: "EUR",
        })
        .then((taken) => sent("Product Viewed", taken));
    });
    $("identify").addEventListener("click", () => {
      analytics
        .identify("ada", { name: "Ada Lovelace", email: "ada@example.com" })
        .then((taken) => sent("ada", taken));
    });
    $("invalid").addEventListener("click", () => {
      // No order_id and a total that is not a number: Clicktrail accepts the call, its workers
      // dead-letter it with both errors, and the debugger shows why.
      analytics
        .track("Order Completed", { total: "a lot" })
        .then((taken) => sent("Order Completed (invalid)", taken));
    });
  }

  if (!writeKey) {
    $("setup").hidden = false;
    return;
  }
  $("shop").hidden = false;
  $("sdk").textContent = SDKS[sdk].name;
  for (const link of document.querySelectorAll("#sdks a")) {
    const other = new URLSearchParams(params);
    other.set("sdk", link.dataset.sdk);
    link.href = `?${other}`;
  }
  $("debugger").href = `${host}/debugger#key=${encodeURIComponent(writeKey)}`;
  SDKS[sdk].before();
  const library = document.createElement("script");
  library.src = SDKS[sdk].script;
  library.addEventListener("load", start);
  document.head.append(library);
})();
