// Clicktrail's live debugger: polls GET /v1/debugger/events once a second and shows each event
// as the workers made it, newest first. Every value from the API is written with textContent,
// never as HTML: events are whatever senders put in them.
"use strict";

(() => {
  const POLL_MS = 1000;
  const RETRY_MS = 5000;
  const MAX_ROWS = 500;
  const STORE = "clicktrail-debugger";

  const $ = (id) => document.getElementById(id);
  const state = {
    auth: null,
    sources: [],
    sourceId: null,
    cursor: null,
    paused: false,
    pending: [],
    timer: null,
    generation: 0,
    retention: 0,
  };

  class ApiError extends Error {
    constructor(status, code, message, body) {
      super(message);
      this.status = status;
      this.code = code;
      this.body = body;
    }
  }

  async function api(path) {
    let response;
    try {
      response = await fetch(path, {
        headers: { Authorization: state.auth, Accept: "application/json" },
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, "network", "the API cannot be reached");
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new ApiError(response.status, body.code || "error", body.message || response.statusText,
        body);
    }
    return body;
  }

  // A debugger key and the admin token go the same way; the API tells them apart. Write keys
  // are not taken: every page with a browser SDK shows them.
  function authorization(secret) {
    if (!/^[\x21-\x7e]+$/.test(secret)) throw new Error("not a header value");
    return "Bearer " + secret;
  }

  function setStatus(text, error = false) {
    const status = $("status");
    status.textContent = text;
    status.classList.toggle("error", error);
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clock(iso) {
    const moment = iso ? new Date(iso) : null;
    if (!moment || Number.isNaN(moment.getTime())) return "";
    const pad = (n, width = 2) => String(n).padStart(width, "0");
    return `${pad(moment.getHours())}:${pad(moment.getMinutes())}:${pad(moment.getSeconds())}` +
      `.${pad(moment.getMilliseconds(), 3)}`;
  }

  function pane(title, value, className) {
    const section = element("section", className);
    section.append(element("h3", null, title));
    section.append(element("pre", null, value === null ? "—" : JSON.stringify(value, null, 2)));
    return section;
  }

  function errorTable(errors) {
    const table = element("table", "errors");
    const head = table.createTHead().insertRow();
    for (const title of ["Path", "Check", "Message"]) head.append(element("th", null, title));
    const body = table.createTBody();
    for (const error of errors) {
      const row = body.insertRow();
      row.append(element("td", "path", error.path || "/"));
      row.append(element("td", "keyword", error.keyword));
      row.append(element("td", "message", error.message));
    }
    return table;
  }

  function eventRow(entry) {
    if (entry.status === "skipped") {
      const row = element("li", "skipped",
        `${entry.count} event(s) not shown: the source sends more than the debugger samples.`);
      row.dataset.status = "skipped";
      return row;
    }
    const rejected = entry.status === "dead_lettered";
    const row = element("li", `event ${entry.status}`);
    row.dataset.messageId = entry.messageId || "";
    row.dataset.status = entry.status;
    row.dataset.search = [entry.name, entry.type, entry.messageId, entry.schema]
      .filter(Boolean).join(" ").toLowerCase();

    const details = element("details");
    const summary = element("summary");
    summary.append(element("time", null, clock(entry.receivedAt || entry.at)));
    summary.append(element("span", "badge status",
      rejected ? `rejected: ${entry.reason}` : "published"));
    summary.append(element("span", "badge type", entry.type));
    summary.append(element("span", "name", entry.name || ""));
    summary.append(element("code", "message-id", entry.messageId));
    summary.append(element("span", "schema", entry.schema || ""));
    details.append(summary);

    const detail = element("div", "detail");
    if (rejected) {
      detail.append(element("h3", null, `Errors (${entry.errors.length})`));
      detail.append(errorTable(entry.errors));
    }
    const panes = element("div", "panes");
    panes.append(pane("Received (IP and pseudonymised fields protected)", entry.raw, "raw"));
    panes.append(pane(rejected ? "Dead-lettered: not published" : "Published (enriched)",
      entry.enriched, "enriched"));
    detail.append(panes);
    details.append(detail);
    row.append(details);
    return row;
  }

  // A receipt (GET /v1/events/<messageId>): what became of one event, from Postgres.
  function receiptView(body) {
    const view = element("div", `receipt-body ${body.status}`);
    view.append(element("h3", null, `${body.messageId}: ${body.status.replace("_", " ")}`));
    view.append(element("p", "explanation", body.explanation));
    for (const copy of body.receipts || []) {
      const list = element("dl");
      const add = (term, value) => {
        if (value === undefined || value === null || value === "") return;
        list.append(element("dt", null, term), element("dd", null, value));
      };
      add("Received", `${copy.receivedAt} by ${copy.sourceId}`);
      add("Erased", copy.erasedAt);
      add("Event", [copy.type, copy.event].filter(Boolean).join(" "));
      const published = copy.published;
      if (published) {
        add("Published", `${published.at || ""} to ${published.topic} [${published.partition}]` +
          `@${published.offset}, schema ${published.schema || "—"}`);
      }
      const dead = copy.deadLettered;
      if (dead) {
        add("Dead-lettered", `${dead.at || ""} to ${dead.topic} [${dead.partition}]` +
          `@${dead.offset}: ${dead.reason}`);
      }
      view.append(list);
      if (dead && dead.errors && dead.errors.length) view.append(errorTable(dead.errors));
    }
    if (body.queue) {
      const depth = body.queue.depth === null ? "unknown" : body.queue.depth;
      view.append(element("p", "queue", `Messages waiting in the queue: ${depth}`));
    }
    return view;
  }

  async function lookUp(messageId) {
    const box = $("receipt");
    box.hidden = false;
    box.replaceChildren(element("p", null, `Looking up ${messageId}…`));
    try {
      const body = await api(`/v1/events/${encodeURIComponent(messageId)}`);
      box.replaceChildren(receiptView(body));
    } catch (err) {
      // Not found yet is an answer too: the API says why and how deep the queue is.
      if (err.status === 404 && err.body && err.body.status) {
        box.replaceChildren(receiptView(err.body));
      } else {
        box.replaceChildren(element("p", "error", `${err.message} (${err.code})`));
      }
    }
  }

  function applyFilter(row) {
    const show = $("filter").value;
    const words = $("search").value.trim().toLowerCase();
    const status = row.dataset.status;
    let visible = show === "all" || status === show || status === "skipped";
    if (visible && words) visible = (row.dataset.search || "").includes(words);
    row.hidden = !visible;
  }

  function render(entries) {
    const list = $("events");
    // Entries come newest first: add the oldest first so the newest ends on top.
    for (const entry of [...entries].reverse()) {
      const row = eventRow(entry);
      applyFilter(row);
      list.prepend(row);
    }
    while (list.children.length > MAX_ROWS) list.lastElementChild.remove();
    $("empty").hidden = list.children.length > 0;
  }

  function receive(entries) {
    if (!entries.length) return;
    if (state.paused) {
      state.pending = [...entries, ...state.pending].slice(0, MAX_ROWS);
      $("pause").textContent = `Resume (${state.pending.length} new)`;
      return;
    }
    render(entries);
  }

  function sourceName() {
    const source = state.sources.find((s) => s.id === state.sourceId);
    return source ? source.name : state.sourceId;
  }

  function schedule(generation, delay) {
    clearTimeout(state.timer);
    state.timer = setTimeout(() => poll(generation), delay);
  }

  async function poll(generation) {
    if (generation !== state.generation) return;
    const query = new URLSearchParams({ sourceId: state.sourceId, limit: "100" });
    if (state.cursor) query.set("after", state.cursor);
    try {
      const body = await api(`/v1/debugger/events?${query}`);
      if (generation !== state.generation) return;
      state.cursor = body.cursor || state.cursor;
      state.retention = body.retentionSeconds;
      receive(body.events);
      const minutes = Math.round(body.retentionSeconds / 60);
      setStatus(`Watching ${sourceName()} · updated ${clock(new Date().toISOString())}` +
        ` · events are kept ${minutes} min`);
      schedule(generation, POLL_MS);
    } catch (err) {
      if (generation !== state.generation) return;
      if (err.status === 401 || err.status === 403) {
        disconnect(`${err.message} (${err.code})`);
        return;
      }
      setStatus(`${err.message}; trying again in ${RETRY_MS / 1000} s`, true);
      schedule(generation, RETRY_MS);
    }
  }

  function watch(sourceId) {
    state.generation += 1;
    state.sourceId = sourceId;
    state.cursor = null;
    state.pending = [];
    $("events").replaceChildren();
    $("empty").hidden = false;
    sessionStorage.setItem(`${STORE}-source`, sourceId);
    poll(state.generation);
  }

  async function connect(kind, secret) {
    try {
      state.auth = authorization(secret);
    } catch (err) {
      setStatus("that secret cannot be sent in an HTTP header", true);
      return;
    }
    setStatus("Connecting…");
    let body;
    try {
      body = await api("/v1/debugger/sources");
    } catch (err) {
      state.auth = null;
      setStatus(`${err.message} (${err.code})`, true);
      return;
    }
    sessionStorage.setItem(STORE, JSON.stringify({ kind, secret }));
    state.sources = body.sources;
    const picker = $("source");
    picker.replaceChildren(...body.sources.map((s) => {
      const option = element("option", null, `${s.name} (${s.id})`);
      option.value = s.id;
      return option;
    }));
    picker.disabled = !body.admin;
    $("connect").hidden = true;
    $("watch").hidden = false;
    if (!body.sources.length) {
      setStatus("There is no source yet: create one with clicktrail sources create", true);
      return;
    }
    const remembered = sessionStorage.getItem(`${STORE}-source`);
    const first = body.sources.some((s) => s.id === remembered) ? remembered : body.sources[0].id;
    picker.value = first;
    watch(first);
  }

  function disconnect(reason) {
    state.generation += 1;
    clearTimeout(state.timer);
    state.auth = null;
    sessionStorage.removeItem(STORE);
    $("watch").hidden = true;
    $("connect").hidden = false;
    $("secret").value = "";
    setStatus(reason || "Disconnected", Boolean(reason));
  }

  function togglePause() {
    state.paused = !state.paused;
    const button = $("pause");
    button.classList.toggle("paused", state.paused);
    if (state.paused) {
      button.textContent = "Resume";
      return;
    }
    button.textContent = "Pause";
    const pending = state.pending;
    state.pending = [];
    render(pending);
  }

  function start() {
    $("connect").addEventListener("submit", (event) => {
      event.preventDefault();
      connect($("kind").value, $("secret").value.trim());
    });
    $("source").addEventListener("change", (event) => watch(event.target.value));
    $("pause").addEventListener("click", togglePause);
    $("clear").addEventListener("click", () => {
      $("events").replaceChildren();
      $("empty").hidden = false;
    });
    $("disconnect").addEventListener("click", () => disconnect());
    $("lookup").addEventListener("submit", (event) => {
      event.preventDefault();
      const messageId = $("lookup-id").value.trim();
      if (messageId) lookUp(messageId);
    });
    for (const id of ["filter", "search"]) {
      $(id).addEventListener("input", () => {
        for (const row of $("events").children) applyFilter(row);
      });
    }

    // A link may carry the secret in its fragment (#key=… or #token=…), which browsers never
    // send to a server; it is taken out of the address bar at once.
    window.addEventListener("hashchange", connectFromFragment);
    if (connectFromFragment()) return;
    const saved = JSON.parse(sessionStorage.getItem(STORE) || "null");
    if (saved) {
      $("kind").value = saved.kind;
      connect(saved.kind, saved.secret);
    }
  }

  function connectFromFragment() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const given = fragment.get("token") ? ["admin", fragment.get("token")]
      : fragment.get("key") ? ["key", fragment.get("key")] : null;
    if (!given) return false;
    history.replaceState(null, "", location.pathname + location.search);
    $("kind").value = given[0];
    state.generation += 1;
    connect(given[0], given[1]);
    return true;
  }

  start();
})();
