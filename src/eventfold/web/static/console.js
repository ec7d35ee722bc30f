// The eventfold console: one page over the HTTP API. Every value from the store is set
// as text (textContent, text nodes), never parsed as HTML.
"use strict";

(function () {
  // The API's root: the console is served at <root>/console/.
  const API = new URL("../", window.location.href.split("#")[0]);
  const main = document.getElementById("main");
  const statusLine = document.getElementById("status");
  const tokenInput = document.getElementById("token");

  tokenInput.value = window.sessionStorage.getItem("eventfold-token") || "";
  tokenInput.addEventListener("change", () => {
    window.sessionStorage.setItem("eventfold-token", tokenInput.value.trim());
  });

  // -- helpers -------------------------------------------------------------------------

  // An element: attributes set as properties or attributes, children as nodes or text.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "className") node.className = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function json(value) {
    return el("pre", {}, JSON.stringify(value, null, 2));
  }

  function show(...nodes) {
    main.replaceChildren(...nodes);
  }

  function say(text, isError) {
    statusLine.textContent = text;
    statusLine.className = isError ? "error" : "";
  }

  function hash(path, params) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== null && v !== undefined && v !== "") query.set(k, String(v));
    }
    const text = query.toString();
    return "#" + path + (text ? "?" + text : "");
  }

  function enc(text) {
    return encodeURIComponent(text);
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || "HTTP " + status);
      this.status = status;
      this.body = body;
    }
  }

  async function api(path, options) {
    const opts = Object.assign({ method: "GET", headers: {} }, options || {});
    const token = tokenInput.value.trim();
    if (token) opts.headers["Authorization"] = "Bearer " + token;
    if (opts.json !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(opts.json);
      delete opts.json;
    }
    const response = await fetch(new URL(path, API), opts);
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (e) {
      body = { message: text };
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return { body, response };
  }

  function failure(err) {
    const status = err.status ? err.status + " " : "";
    return el("p", { className: "error", id: "error" }, status + err.message);
  }

  function eventLink(e, label) {
    return el("a", { href: hash("/event", { stream: e.stream_id, version: e.version }) },
      label === undefined ? e.type : label);
  }

  // A forgotten data subject's personal fields hold replacement values, for good: say so
  // beside the data, so nobody takes them for what was recorded.
  function erasedFields(e) {
    return el("div", { id: "erased", className: "erased" },
      el("p", {}, "Personal data erased: the data subject was forgotten (crypto-shredding). "
        + "These fields show their replacement values:"),
      el("ul", { id: "erased-fields" }, e.erased.map((f) =>
        el("li", { "data-field": f }, f, " ", el("span", { className: "erased-badge" }, "erased"),
          " reads as ", JSON.stringify(e.data == null ? null : e.data[f])))));
  }

  function eventsTable(events) {
    const rows = events.map((e) =>
      el("tr", { className: "event-row" },
        el("td", {}, e.position),
        el("td", {}, el("a", { href: hash("/browse", { stream_id: e.stream_id }) }, e.stream_id)),
        el("td", {}, String(e.version)),
        el("td", {}, eventLink(e),
          e.erased ? el("span", { className: "erased-badge", title: "personal fields erased: " + e.erased.join(", ") }, "erased") : ""),
        el("td", {}, e.recorded_at),
        el("td", {}, e.correlation_id
          ? el("a", { href: hash("/correlation", { id: e.correlation_id }) }, e.correlation_id)
          : ""),
      ));
    return el("table", { id: "events" },
      el("thead", {}, el("tr", {}, ["position", "stream", "version", "type", "recorded", "correlation"]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, rows));
  }

  // -- the stream browser ---------------------------------------------------------------

  const FILTERS = [
    ["stream_id", "stream id"], ["category", "category"], ["type", "type"],
    ["since", "since (ISO 8601)"], ["until", "until"], ["correlation_id", "correlation id"],
  ];

  async function browse(params) {
    const inputs = {};
    const form = el("form", { className: "search", id: "search" },
      FILTERS.map(([name, label]) => el("label", {}, label,
        inputs[name] = el("input", { name, value: params.get(name) || "" }))),
      el("button", { type: "submit", id: "search-button" }, "Search"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const next = {};
      for (const [name] of FILTERS) next[name] = inputs[name].value.trim();
      window.location.hash = hash("/browse", next);
    });
    const results = el("div", { id: "results" });
    show(el("h1", {}, "Streams and the global log"), form, results);

    const query = new URLSearchParams();
    for (const name of ["type", "since", "until", "correlation_id"]) {
      if (params.get(name)) query.set(name, params.get(name));
    }
    if (params.get("cursor")) query.set("cursor", params.get("cursor"));
    const stream = params.get("stream_id");
    try {
      let page;
      if (stream) {
        page = (await api("streams/" + enc(stream) + "/events?" + query)).body;
        results.append(el("h2", {}, "Stream ", stream, " (version " + page.version + ")"),
          el("p", {}, el("a", { id: "compensate-link", href: hash("/compensate", { stream }) },
            "Append a compensating event")));
      } else {
        if (params.get("category")) query.set("category", params.get("category"));
        page = (await api("log?" + query)).body;
        results.append(el("h2", {}, "Global log (head " + page.head + ")"));
      }
      results.append(page.events.length ? eventsTable(page.events) : el("p", {}, "No events match."));
      if (page.next) {
        const more = Object.fromEntries(params.entries());
        more.cursor = page.next;
        results.append(el("a", { id: "next-page", href: hash("/browse", more) }, "Next page"));
      }
      if (!stream) {
        const listing = await api("streams?limit=100" +
          (params.get("category") ? "&category=" + enc(params.get("category")) : ""));
        results.append(el("h2", {}, "Streams"), el("ul", { id: "streams" },
          listing.body.streams.map((s) => el("li", {},
            el("a", { href: hash("/browse", { stream_id: s.stream_id }) }, s.stream_id),
            " (version " + s.version + ")"))));
      }
    } catch (err) {
      results.append(failure(err));
    }
  }

  // -- one event ------------------------------------------------------------------------

  async function eventPage(params) {
    const stream = params.get("stream");
    const version = params.get("version");
    show(el("h1", {}, "Event ", stream, " @ ", version));
    let e;
    try {
      e = (await api("streams/" + enc(stream) + "/events/" + enc(version))).body;
    } catch (err) {
      main.append(failure(err));
      return;
    }
    const envelope = ["event_id", "stream_id", "version", "position", "type", "schema_version",
      "stored_type", "stored_schema_version", "recorded_at", "correlation_id", "causation_id"];
    // The API leaves out what says nothing: null fields, and how an event that was not
    // upcast was stored (as it reads).
    const shown = Object.assign({}, e, {
      stored_type: e.stored_type ?? e.type,
      stored_schema_version: e.stored_schema_version ?? e.schema_version,
    });
    const links = el("p", { className: "links" },
      el("a", { href: hash("/browse", { stream_id: stream }) }, "Stream"), " · ",
      e.correlation_id
        ? el("a", { id: "follow-correlation", href: hash("/correlation", { id: e.correlation_id }) },
          "Follow the correlation")
        : "no correlation id", " · ",
      el("a", { id: "compensate-link", href: hash("/compensate", { stream, causation: e.event_id, type: e.type }) },
        "Compensate"));
    const projections = el("span", { id: "step-links" });
    links.append(" · ", projections);
    main.append(links,
      e.erased ? erasedFields(e) : "",
      el("h2", {}, "Envelope"),
      el("table", { id: "envelope" }, envelope.map((k) =>
        el("tr", {}, el("th", {}, k), el("td", { "data-field": k }, shown[k] == null ? "" : String(shown[k]))))),
      el("h2", {}, "Metadata"), json(e.metadata),
      el("h2", {}, "Data (decoded)"),
      e.undecodable ? el("p", { className: "error" }, "Does not decode: ", e.undecodable) : "",
      el("pre", { id: "event-data" }, JSON.stringify(e.data, null, 2)),
      el("h2", {}, "Stored bytes (" + e.stored.encoding + (e.stored.exact ? ", exact" : ", encoded again") + ")"),
      el("pre", { id: "stored-json" }, JSON.stringify(e.stored.json)),
      el("pre", { id: "stored-base64" }, e.stored.base64));
    try {
      const all = (await api("projections")).body;
      if (all.length) projections.append("Step: ");
      for (const p of all) {
        projections.append(el("a", {
          className: "step-link",
          href: hash("/stepper", { name: p.name, stream, at: e.version }),
        }, p.name), " ");
      }
    } catch (err) {
      projections.append(failure(err));
    }
  }

  // -- the correlation graph ------------------------------------------------------------

  async function correlation(params) {
    const id = params.get("id");
    show(el("h1", {}, "Correlation ", id));
    const events = [];
    try {
      let cursor = null;
      for (let pages = 0; pages < 50; pages++) {
        const q = new URLSearchParams({ correlation_id: id, limit: "1000" });
        if (cursor) q.set("cursor", cursor);
        const page = (await api("log?" + q)).body;
        events.push(...page.events);
        cursor = page.next;
        if (!cursor) break;
      }
    } catch (err) {
      main.append(failure(err));
      return;
    }
    const byId = new Map(events.map((e) => [e.event_id, e]));
    const children = new Map();
    const roots = [];
    for (const e of events) {
      if (e.causation_id && byId.has(e.causation_id) && e.causation_id !== e.event_id) {
        if (!children.has(e.causation_id)) children.set(e.causation_id, []);
        children.get(e.causation_id).push(e);
      } else {
        roots.push(e);
      }
    }
    const seen = new Set();
    function item(e) {
      seen.add(e.event_id);
      const kids = (children.get(e.event_id) || []).filter((k) => !seen.has(k.event_id));
      return el("li", { className: "graph-node", "data-event-id": e.event_id },
        el("span", { className: "stream-tag" }, e.stream_id), eventLink(e, e.type + " #" + e.version),
        " at " + e.position,
        e.causation_id && !byId.has(e.causation_id) ? " (caused by " + e.causation_id + ", outside)" : "",
        kids.length ? el("ul", { className: "graph" }, kids.map(item)) : null);
    }
    const streams = new Set(events.map((e) => e.stream_id));
    main.append(
      el("p", {}, events.length + " events in " + streams.size + " streams; each indented under the event that caused it."),
      el("ul", { className: "graph", id: "graph" }, roots.map(item)));
  }

  // -- the projection stepper -----------------------------------------------------------

  async function stepper(params) {
    const name = params.get("name");
    const stream = params.get("stream");
    show(el("h1", {}, "Stepping ", name, " over ", stream));
    let body;
    try {
      const q = new URLSearchParams();
      if (params.get("doc_id")) q.set("doc_id", params.get("doc_id"));
      body = (await api("projections/" + enc(name) + "/steps/" + enc(stream) + "?" + q)).body;
    } catch (err) {
      main.append(failure(err));
      return;
    }
    const steps = body.steps;
    let index = steps.length - 1;
    const wanted = Number(params.get("at"));
    if (wanted) {
      const found = steps.findIndex((s) => s.version === wanted);
      if (found >= 0) index = found;
    }
    const slider = el("input", { type: "range", id: "step-slider", min: 0, max: steps.length - 1 });
    const where = el("span", { id: "step-where" });
    const detail = el("div", { id: "step-detail" });
    function render() {
      slider.value = String(index);
      const s = steps[index];
      where.textContent = "event " + (index + 1) + " of " + steps.length + ": version " + s.version + ", " + s.type;
      const changes = s.changes.map((c) => el("tr", { className: "change-" + c.op },
        el("td", {}, c.op), el("td", {}, c.path || "(document)"),
        el("td", {}, JSON.stringify(c.before)), el("td", {}, JSON.stringify(c.after))));
      detail.replaceChildren(
        s.error ? el("p", { className: "error", id: "step-error" }, "The evolver failed here: ", s.error) : "",
        el("p", {}, s.handled ? "Handled by the projection." : "Not handled: nothing changed."),
        el("h2", {}, "Changes"),
        changes.length
          ? el("table", { id: "step-changes" }, el("tr", {}, ["op", "path", "before", "after"].map((h) => el("th", {}, h))), changes)
          : el("p", { id: "step-changes" }, "No change."),
        el("h2", {}, "State after this event"),
        el("pre", { id: "step-state" }, JSON.stringify(s.state, null, 2)));
    }
    const prev = el("button", { id: "step-prev", type: "button", onclick: () => { if (index > 0) { index--; render(); } } }, "◀ Previous");
    const next = el("button", { id: "step-next", type: "button", onclick: () => { if (index < steps.length - 1) { index++; render(); } } }, "Next ▶");
    slider.addEventListener("input", () => { index = Number(slider.value); render(); });
    main.append(
      el("p", {}, "Document ", body.doc_id, " of ", body.projection, " v" + body.version,
        body.complete ? "" : " (stopped early)"),
      el("div", { className: "stepper-controls" }, prev, slider, next, where), detail);
    render();
  }

  // -- projections ----------------------------------------------------------------------

  const STALL_SECONDS = 30;
  const samples = new Map(); // name -> {position, head, since}

  function stalled(p) {
    const now = Date.now() / 1000;
    const last = samples.get(p.name);
    if (!last || last.position !== p.position || p.lag_events === 0) {
      samples.set(p.name, { position: p.position, since: now });
      return p.state === "failed";
    }
    return p.state === "failed" || now - last.since >= STALL_SECONDS;
  }

  async function projectionsPage() {
    show(el("h1", {}, "Projections"));
    let all;
    try {
      all = (await api("projections")).body;
    } catch (err) {
      main.append(failure(err));
      return;
    }
    const head = ["name", "version", "active", "state", "position", "head", "lag (events)",
      "lag (s)", "parked", "last error", ""];
    main.append(el("table", { id: "projections" },
      el("tr", {}, head.map((h) => el("th", {}, h))),
      all.map((p) => {
        const stall = stalled(p);
        return el("tr", { "data-name": p.name },
          el("td", {}, p.name), el("td", {}, String(p.version)),
          el("td", {}, p.active_version === null ? "" : String(p.active_version)),
          el("td", { className: stall ? "stalled" : "" }, p.state + (stall ? " (stalled)" : "")),
          el("td", {}, p.position), el("td", {}, p.head),
          el("td", {}, String(p.lag_events) + (p.lag_exact ? "" : "+")),
          el("td", {}, String(p.lag_seconds)), el("td", { className: "parked-count" }, String(p.parked)),
          el("td", {}, p.last_error || ""),
          el("td", {}, el("button", {
            type: "button", className: "rebuild", onclick: () => rebuild(p.name),
          }, "Rebuild")));
      })));
    for (const p of all) {
      const section = el("section", { className: "parked", "data-name": p.name });
      main.append(section);
      await parkedSection(p.name, section);
    }
  }

  async function parkedSection(name, section) {
    let parked;
    try {
      parked = (await api("projections/" + enc(name) + "/parked")).body;
    } catch (err) {
      section.replaceChildren(failure(err));
      return;
    }
    const replay = async (positions) => {
      try {
        const { body } = await api("projections/" + enc(name) + "/parked/replay",
          { method: "POST", json: positions ? { positions } : {} });
        say("Replayed " + body.replayed.length + ", failed again " + body.failed.length + ".", body.failed.length > 0);
        await projectionsPage();
      } catch (err) {
        say("Replay refused: " + (err.status || "") + " " + err.message, true);
      }
    };
    section.replaceChildren(el("h2", {}, "Parked events of ", name, " (" + parked.length + ")"));
    if (!parked.length) return;
    section.append(el("table", { className: "parked-events" },
      el("tr", {}, ["position", "stream", "type", "attempts", "error", ""].map((h) => el("th", {}, h))),
      parked.map((e) => el("tr", {},
        el("td", {}, e.position), el("td", {}, e.stream_id), el("td", {}, e.type),
        el("td", {}, String(e.attempts)), el("td", {}, e.error),
        el("td", {}, el("button", {
          type: "button", className: "replay", onclick: () => replay([e.position]),
        }, "Replay"))))),
      el("button", { type: "button", className: "replay-all", onclick: () => replay(null) }, "Replay all"));
  }

  async function rebuild(name) {
    try {
      await api("projections/" + enc(name) + "/rebuild", { method: "POST", json: {} });
    } catch (err) {
      say("Rebuild refused: " + (err.status || "") + " " + err.message, true);
      return;
    }
    for (;;) {
      let job;
      try {
        job = (await api("projections/" + enc(name) + "/rebuild")).body;
      } catch (err) {
        say("Rebuild progress unavailable: " + err.message, true);
        return;
      }
      const done = job.progress.reduce((n, p) => n + p.done, 0);
      const total = job.progress.reduce((n, p) => n + p.total, 0);
      if (job.state !== "running") {
        say("Rebuild of " + name + " " + job.state + (job.error ? ": " + job.error : "") + ".", job.state === "failed");
        await projectionsPage();
        return;
      }
      say("Rebuilding " + name + ": " + done + " of " + total + " events.");
      await new Promise((resolve) => window.setTimeout(resolve, 500));
    }
  }

  // -- the compensating event -----------------------------------------------------------

  async function compensate(params) {
    const stream = params.get("stream");
    show(el("h1", {}, "Compensating event on ", stream));
    let version = 0;
    try {
      const page = (await api("streams/" + enc(stream) + "/events?backwards=true&limit=1")).body;
      version = page.version;
    } catch (err) {
      if (err.status !== 404) {
        main.append(failure(err));
        return;
      }
    }
    const inputs = {
      type: el("input", { name: "type", id: "comp-type", required: true, value: "" }),
      data: el("textarea", { name: "data", id: "comp-data" }),
      reason: el("input", { name: "reason", id: "comp-reason", required: true, size: 60 }),
      expected: el("input", { name: "expected", id: "comp-expected", value: String(version) }),
      causation: el("input", { name: "causation", id: "comp-causation", value: params.get("causation") || "", size: 40 }),
    };
    inputs.data.value = "{}";
    const result = el("div", { id: "comp-result" });
    const form = el("form", { className: "compensate", id: "compensate" },
      el("p", {}, "Appends one correcting event; the stored events are never changed. ",
        "It is appended only if the stream is still at the expected version."),
      params.get("type") ? el("p", {}, "Compensating an event of type ", params.get("type"), ".") : "",
      el("label", {}, "Event type", inputs.type),
      el("label", {}, "Data (JSON object)", inputs.data),
      el("label", {}, "Reason (recorded in metadata)", inputs.reason),
      el("label", {}, "Expected version", inputs.expected),
      el("label", {}, "Caused by event id (optional)", inputs.causation),
      el("button", { type: "submit", id: "comp-submit" }, "Append"), result);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      let data;
      try {
        data = JSON.parse(inputs.data.value);
      } catch (err) {
        result.replaceChildren(el("p", { className: "error" }, "Data is not JSON: " + err.message));
        return;
      }
      const reason = inputs.reason.value.trim();
      if (!reason) {
        result.replaceChildren(el("p", { className: "error" }, "Give a reason: it is recorded with the event."));
        return;
      }
      const event = {
        type: inputs.type.value.trim(),
        data,
        metadata: { reason, compensating: true },
      };
      if (inputs.causation.value.trim()) event.causation_id = inputs.causation.value.trim();
      try {
        const { body } = await api("streams/" + enc(stream) + "/events", {
          method: "POST",
          json: { events: [event] },
          headers: { "If-Match": 'W/"' + inputs.expected.value.trim() + '"' },
        });
        result.replaceChildren(el("p", { className: "ok", id: "comp-ok" },
          "Appended: the stream is at version " + body.version + " (position " + body.position + "). ",
          el("a", { href: hash("/event", { stream, version: body.version }) }, "Open it")));
        inputs.expected.value = String(body.version);
      } catch (err) {
        result.replaceChildren(failure(err));
      }
    });
    main.append(form);
  }

  // -- routing --------------------------------------------------------------------------

  const PAGES = {
    "/browse": browse,
    "/event": eventPage,
    "/correlation": correlation,
    "/stepper": stepper,
    "/projections": projectionsPage,
    "/compensate": compensate,
  };

  // Each page shown gets a new mark (unique across reloads): a page is done when its
  // mark has changed and data-ready is "true".
  const loaded = Date.now().toString(36) + Math.random().toString(36).slice(2);
  let navigations = 0;

  async function route() {
    const text = window.location.hash.slice(1) || "/browse";
    const [path, query] = text.split("?");
    const page = PAGES[path] || browse;
    say("");
    navigations += 1;
    document.body.dataset.page = path;
    document.body.dataset.nav = loaded + ":" + navigations;
    document.body.dataset.ready = "false";
    try {
      await page(new URLSearchParams(query || ""));
    } catch (err) {
      main.append(failure(err));
    }
    document.body.dataset.ready = "true";
  }

  window.addEventListener("hashchange", route);
  route();
})();
