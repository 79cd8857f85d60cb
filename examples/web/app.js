// The example shop's tracking: Segment's Analytics.js 2.0 (vendored in vendor/analytics-next)
// configured to send to Clicktrail. Two settings make that so: the Segment.io integration's
// apiHost and protocol (where calls go), and cdnSettings given inline (so the library never asks
// Segment's CDN for a source's settings). window.analytics._cdn, set before the library loads,
// makes it fetch any code it loads later from vendor/ as well.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const host = (params.get("host") || "http://127.0.0.1:8000").replace(/\/+$/, "");
  const writeKey = params.get("writeKey") || "";
  const $ = (id) => document.getElementById(id);

  function sent(kind, label, context) {
    const event = context.event;
    const item = document.createElement("li");
    item.dataset.type = event.type;
    item.dataset.messageId = event.messageId;
    const failed = context.failedDelivery && context.failedDelivery();
    item.className = failed ? "failed" : "";
    item.append(`${kind} ${label} `);
    const id = document.createElement("code");
    id.textContent = failed ? `${event.messageId}: not delivered` : event.messageId;
    item.append(id);
    $("sent").prepend(item);
  }

  function start() {
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

    analytics.page("Shop", "Home").then((ctx) => sent("page", "Shop / Home", ctx));
    $("view").addEventListener("click", () => {
      analytics
        .track("Product Viewed", {
          product_id: "mug-blue", name: "Blue mug", price: 12.5, currency: "EUR",
        })
        .then((ctx) => sent("track", "Product Viewed", ctx));
    });
    $("identify").addEventListener("click", () => {
      analytics
        .identify("ada", { name: "Ada Lovelace", email: "ada@example.com" })
        .then((ctx) => sent("identify", "ada", ctx));
    });
    $("invalid").addEventListener("click", () => {
      // No order_id and a total that is not a number: Clicktrail accepts the call, its workers
      // dead-letter it with both errors, and the debugger shows why.
      analytics
        .track("Order Completed", { total: "a lot" })
        .then((ctx) => sent("track", "Order Completed (invalid)", ctx));
    });
  }

  if (!writeKey) {
    $("setup").hidden = false;
    return;
  }
  $("shop").hidden = false;
  $("debugger").href = `${host}/debugger#key=${encodeURIComponent(writeKey)}`;
  window.analytics = { _cdn: new URL("vendor", location.href).href };
  const library = document.createElement("script");
  library.src = "vendor/analytics-next/bundles/index.js";
  library.addEventListener("load", start);
  document.head.append(library);
})();
