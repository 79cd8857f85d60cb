// Sends calls through a real Node.js SDK, as an application would, then flushes and exits.
//
// stdin: {"sdk": "segment" | "rudderstack", "host": "http://...", "writeKey": "...",
//         "gzip": true | false, "calls": [{"type": "track", "userId": ..., ...}, ...]}
// Each call's fields go to the SDK method of its type unchanged (identify, track, page,
// screen, group, alias). Exits 1 if the SDK reports any failure, printing it.
import { readFileSync } from "node:fs";
import { Analytics as SegmentAnalytics } from "@segment/analytics-node";
import RudderAnalytics from "@rudderstack/rudder-sdk-node";

const { sdk, host, writeKey, gzip, calls } = JSON.parse(readFileSync(0, "utf8"));
const failures = [];

function send(client, wait) {
  for (const { type, ...fields } of calls) {
    client[type](fields, (error) => {
      if (error) failures.push(`${type} ${fields.messageId}: ${error.message ?? error}`);
    });
  }
  return wait();
}

if (sdk === "segment") {
  // analytics-node has no gzip option: it always posts uncompressed JSON.
  const client = new SegmentAnalytics({ writeKey, host, flushAt: calls.length, maxRetries: 3 });
  client.on("error", (error) => failures.push(`error event: ${error.code} ${error.reason}`));
  await send(client, () => client.closeAndFlush({ timeout: 20000 }));
} else if (sdk === "rudderstack") {
  const client = new RudderAnalytics(writeKey, {
    dataPlaneUrl: host,
    gzip,
    flushAt: calls.length,
    retryCount: 3,
    logLevel: "error",
    // Without a handler, a failed automatic flush ends the process with an unhandled rejection.
    errorHandler: (error) => failures.push(`errorHandler: ${error.message ?? error}`),
  });
  await send(client, () => client.flush().catch((error) => failures.push(`flush: ${error}`)));
} else {
  failures.push(`unknown sdk ${sdk}`);
}

if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log(`${sdk}: ${calls.length} call(s) flushed`);
