/* The QuartzDB admin dashboard: vanilla JS, no dependencies. Every figure comes from this
 * router's public /v1 API, called with the API key the user signed in with (kept in
 * sessionStorage: this tab only, gone when it closes). The API decides what a key may see; the
 * page only leaves out what a key cannot read. Every value from the server is set as text
 * (textContent), never as HTML. */
(() => {
  "use strict";

  const STORAGE_KEY = "quartz.dashboard.apiKey";
  const POLL_MS = { cluster: 5000, usage: 10000, latency: 3000 };
  const LATENCY_POINTS_MAX = 120; // points kept per operation for the chart (6 min at 3 s)
  const COUNT_CACHE_MS = 60000; // a collection's count is reused this long (counts are metered)
  const ADMIN_ONLY = { cluster: "the cluster view", latency: "the latency charts" };
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    key: null,
    me: null, // the signed-in key's KeyInfo (/v1/whoami)
    tab: "cluster",
    timer: null,
    latency: { series: new Map(), selected: "", last: null },
    collections: [], // the signed-in tenant's, for the playground
    counts: new Map(), // collection -> {text, title, at}: the last count of its points
  };

  // ------------------------------------------------------------------ helpers

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
  const fixed = (n, digits) =>
    n === null || n === undefined
      ? "–"
      : Number(n).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  function ms(v) {
    if (v === null || v === undefined) return "–";
    if (v === 0) return "0";
    if (v < 1) return fixed(v, 3);
    if (v < 100) return fixed(v, 2);
    return fixed(v, 0);
  }
  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let v = Number(n);
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return `${fixed(v, i ? 1 : 0)} ${units[i]}`;
  }
  const clock = (unixS) => new Date(unixS * 1000).toLocaleTimeString("en-GB", { hour12: false });
  const day = (unixS) => (unixS ? new Date(unixS * 1000).toISOString().slice(0, 10) : "never");
  function thisMonth() {
    const d = new Date();
    return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
  }
  const isAdmin = () => state.me && state.me.role === "admin";

  function badge(text, kind) {
    return el("span", { class: `badge ${kind || ""}`, text });
  }

  function fillTable(table, rows, emptyText) {
    const body = table.tBodies[0];
    body.replaceChildren();
    if (!rows.length) {
      const cols = table.tHead.rows[0].cells.length;
      body.append(el("tr", {}, el("td", { class: "empty", colspan: cols, text: emptyText || "none" })));
      return;
    }
    for (const cells of rows) {
      const tr = el("tr");
      for (const c of cells) {
        if (c instanceof HTMLTableCellElement) tr.append(c);
        else if (c && typeof c === "object" && "cell" in c) tr.append(el("td", c.attrs || {}, ...c.cell));
        else tr.append(el("td", {}, c instanceof Node ? c : String(c)));
      }
      body.append(tr);
    }
  }
  const numCell = (v) => ({ cell: [v], attrs: { class: "num" } });

  function card(label, value, kind) {
    return el(
      "div",
      { class: `card ${kind || ""}` },
      el("div", { class: "value", text: value }),
      el("div", { class: "label", text: label }),
    );
  }

  function showError(id, err) {
    $(id).textContent = err ? err.message || String(err) : "";
  }

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, detail, code) {
      super(detail);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body, key) {
    const headers = { Authorization: `Bearer ${key || state.key}` };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (exc) {
      throw new ApiError(0, `the router did not answer (${exc.message})`, "UNAVAILABLE");
    }
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (exc) {
      data = null;
    }
    if (!resp.ok) {
      const detail = data && data.detail ? data.detail : `HTTP ${resp.status}`;
      const err = new ApiError(resp.status, detail, data && data.code);
      if (resp.status === 401 && !key) signOut(`Signed out: ${detail}`);
      throw err;
    }
    return data;
  }

  const enc = encodeURIComponent;

  // ------------------------------------------------------------------ sign-in

  async function signIn(key, fromStorage) {
    const me = await api("GET", "/v1/whoami", undefined, key);
    state.key = key;
    state.me = me;
    sessionStorage.setItem(STORAGE_KEY, key);
    $("identity").replaceChildren(
      "key ",
      el("strong", { text: me.id }),
      ` · ${me.role} · tenant `,
      el("strong", { text: me.tenant }),
    );
    $("signin").hidden = true;
    $("app").hidden = false;
    $("signout").hidden = false;
    $("key-role-admin").hidden = !isAdmin();
    $("key-role-admin").disabled = !isAdmin();
    selectTab(fromStorage && sessionStorage.getItem("quartz.dashboard.tab") || (isAdmin() ? "cluster" : "collections"));
  }

  function signOut(message) {
    stopPolling();
    sessionStorage.removeItem(STORAGE_KEY);
    state.key = null;
    state.me = null;
    state.latency = { series: new Map(), selected: "", last: null };
    state.collections = [];
    state.counts = new Map();
    for (const table of document.querySelectorAll("main table")) {
      if (table.tBodies[0]) table.tBodies[0].replaceChildren();
    }
    for (const id of ["cluster-summary", "usage-summary", "usage-chart", "latency-chart", "new-key", "identity"]) {
      $(id).replaceChildren();
    }
    for (const id of ["cluster-body", "usage-body", "latency-body", "pg-result", "new-key-box"]) $(id).hidden = true;
    for (const node of document.querySelectorAll(".error, .ok")) node.textContent = "";
    $("app").hidden = true;
    $("signout").hidden = true;
    $("signin").hidden = false;
    $("apikey").value = "";
    $("signin-error").textContent = message || "";
    $("apikey").focus();
  }

  // ------------------------------------------------------------------ tabs

  const LOADERS = {
    cluster: loadCluster,
    collections: loadCollections,
    usage: openUsage,
    keys: openKeys,
    latency: loadLatency,
    playground: openPlayground,
  };

  function stopPolling() {
    if (state.timer) clearTimeout(state.timer);
    state.timer = null;
  }

  function poll(tab, fn) {
    stopPolling();
    if (!POLL_MS[tab]) return;
    state.timer = setTimeout(async () => {
      if (state.tab !== tab || !state.key) return;
      try {
        await fn(true);
      } finally {
        if (state.tab === tab && state.key) poll(tab, fn);
      }
    }, POLL_MS[tab]);
  }

  function selectTab(tab) {
    if (!LOADERS[tab]) tab = "cluster";
    state.tab = tab;
    sessionStorage.setItem("quartz.dashboard.tab", tab);
    for (const b of document.querySelectorAll(".tabs button")) {
      b.setAttribute("aria-selected", String(b.dataset.tab === tab));
    }
    for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== `page-${tab}`;
    stopPolling();
    const fn = LOADERS[tab];
    fn(false).finally(() => poll(tab, fn));
  }

  /** Whether this tab's data needs an admin key the user does not have (then it says so). */
  function needsAdmin(tab) {
    const notice = $(`${tab}-notice`);
    const refresh = $(`${tab}-refresh`);
    if (refresh) refresh.hidden = !isAdmin();
    if (isAdmin()) {
      notice.hidden = true;
      return false;
    }
    notice.textContent =
      `This tab needs a cluster admin key: ${ADMIN_ONLY[tab]} covers every tenant, and this key ` +
      `is ${state.me.role} of tenant ${state.me.tenant}.`;
    notice.hidden = false;
    $(`${tab}-body`).hidden = true;
    return true;
  }

  // ------------------------------------------------------------------ cluster

  async function loadCluster() {
    if (needsAdmin("cluster")) return;
    let c;
    try {
      c = await api("GET", "/v1/admin/cluster");
    } catch (err) {
      showError("cluster-error", err);
      return;
    }
    showError("cluster-error", null);
    const s = c.summary;
    $("cluster-summary").replaceChildren(
      card("nodes alive", `${s.nodes_alive} / ${s.nodes}`, s.nodes_alive < s.nodes ? "bad" : ""),
      card("nodes unreachable", num(s.nodes_unreachable), s.nodes_unreachable ? "bad" : ""),
      card("shards", num(s.shards)),
      card("under-replicated", num(s.shards_under_replicated), s.shards_under_replicated ? "warn" : ""),
      card("without primary", num(s.shards_without_primary), s.shards_without_primary ? "bad" : ""),
      card("max lag (entries)", num(s.max_lag), s.max_lag ? "warn" : ""),
      card("collections", num(s.collections)),
    );
    fillTable(
      $("nodes-table"),
      c.nodes.map((n) => [
        el("td", { class: "mono", text: n.id }),
        n.address || "–",
        n.alive ? badge("yes", "ok") : badge("no", "bad"),
        n.reachable === null ? "–" : n.reachable ? badge("yes", "ok") : el("span", { title: n.error }, badge("unreachable", "bad")),
        !n.alive ? "–" : n.health ? badge(n.health, "bad") : n.draining ? badge("draining", "warn") : badge("ok", "ok"),
        numCell(num(n.replicas)),
        numCell(num(n.primaries)),
        numCell(bytes(n.rss_bytes)),
      ]),
      "no nodes",
    );
    fillTable(
      $("shards-table"),
      c.shards.map((sh) => [
        sh.tenant === "default" ? sh.collection : `${sh.tenant}/${sh.collection}`,
        numCell(sh.shard),
        numCell(sh.epoch),
        sh.primary || badge("none", "bad"),
        { cell: sh.replicas.map((r) => badge(r.node, r.primary ? "primary" : "")) },
        sh.in_sync.length ? sh.in_sync.join(", ") : badge("creating", "warn"),
        {
          cell: sh.replicas.map((r) => {
            if (r.state !== "ok") return badge(`${r.node}: ${r.state}`, "bad");
            if (r.lag === null) return badge(`${r.node}: ?`, "warn");
            return badge(`${r.node}: ${num(r.lag)}`, r.lag ? "warn" : "ok");
          }),
        },
      ]),
      "no shards",
    );
    fillTable(
      $("all-collections-table"),
      c.collections.map((co) => [
        co.tenant,
        co.name,
        numCell(co.dim),
        co.metric,
        numCell(co.shards),
        numCell(co.replication_factor),
        numCell(co.points_complete ? num(co.points) : `≥ ${num(co.points)}`),
        co.ready ? badge("ready", "ok") : badge("not ready", "warn"),
      ]),
      "no collections",
    );
    $("cluster-updated").textContent = `updated ${clock(Date.now() / 1000)} · etcd revision ${c.revision}`;
    $("cluster-body").hidden = false;
  }

  // ------------------------------------------------------------------ collections

  async function listCollections() {
    const resp = await api("GET", "/v1/collections");
    state.collections = resp.collections;
    return resp.collections;
  }

  /** Points per collection of this tenant, by name: {text, title}. An admin key reads them from
   * /v1/admin/cluster (the primaries' counts: not metered); any other key makes one count call
   * per collection (metered like any count), remembered for COUNT_CACHE_MS unless `force`. */
  async function pointsByName(colls, force) {
    const out = new Map();
    if (isAdmin()) {
      try {
        const c = await api("GET", "/v1/admin/cluster");
        for (const co of c.collections) {
          if (co.tenant !== state.me.tenant) continue;
          out.set(co.name, { text: co.points_complete ? num(co.points) : `≥ ${num(co.points)}`, title: "" });
        }
        return out;
      } catch (err) {
        // fall back to counting
      }
    }
    const now = Date.now();
    await Promise.all(
      colls.map(async (co) => {
        const cached = state.counts.get(co.name);
        if (!force && cached && now - cached.at < COUNT_CACHE_MS) {
          out.set(co.name, cached);
          return;
        }
        let entry;
        try {
          const r = await api("GET", `/v1/collections/${enc(co.name)}/count?allow_partial=true`);
          const partial = r.shards.answered < r.shards.total;
          entry = { text: partial ? `≥ ${num(r.count)}` : num(r.count), title: "", at: now };
        } catch (err) {
          entry = { text: "?", title: err.message, at: 0 };
        }
        state.counts.set(co.name, entry);
        out.set(co.name, entry);
      }),
    );
    return out;
  }

  async function loadCollections(polled, force) {
    let colls;
    try {
      colls = await listCollections();
    } catch (err) {
      showError("collections-error", err);
      return;
    }
    showError("collections-error", null);
    $("collections-tenant").textContent = `tenant ${state.me.tenant}`;
    const pointCells = new Map();
    fillTable(
      $("collections-table"),
      colls.map((co) => {
        const pts = el("td", { class: "num", "data-collection": co.name, text: "…" });
        pointCells.set(co.name, pts);
        return [
          el("td", { class: "mono", text: co.name }),
          numCell(co.dim),
          co.metric,
          numCell(co.shards),
          numCell(co.replication_factor),
          pts,
          co.ready ? badge("ready", "ok") : badge("not ready", "warn"),
        ];
      }),
      "no collections in this tenant",
    );
    const points = await pointsByName(colls, force);
    for (const [name, cell] of pointCells) {
      const p = points.get(name) || { text: "?", title: "" };
      cell.textContent = p.text;
      if (p.title) cell.title = p.title;
    }
  }

  // ------------------------------------------------------------------ tenants (usage, keys)

  async function fillTenants(select) {
    const keep = select.value;
    let names = [state.me.tenant];
    if (isAdmin()) {
      try {
        const resp = await api("GET", "/v1/admin/tenants");
        names = resp.tenants.map((t) => t.name);
      } catch (err) {
        names = [state.me.tenant];
      }
    }
    select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
    select.value = names.includes(keep) ? keep : state.me.tenant;
    select.disabled = !isAdmin();
  }

  // ------------------------------------------------------------------ usage & invoices

  async function openUsage(polled) {
    if (!polled) {
      await fillTenants($("usage-tenant"));
      if (!$("usage-month").value) $("usage-month").value = thisMonth();
    }
    await loadUsage();
  }

  async function loadUsage() {
    const tenant = $("usage-tenant").value || state.me.tenant;
    const month = $("usage-month").value.trim() || thisMonth();
    let u;
    try {
      u = await api("GET", `/v1/usage?tenant=${enc(tenant)}&month=${enc(month)}`);
    } catch (err) {
      showError("usage-error", err);
      $("usage-body").hidden = true;
      return;
    }
    showError("usage-error", null);
    const summary = [
      ["calls", num(u.calls), "usage-calls"],
      ["vectors written", num(u.vectors_written), "usage-vectors-written"],
      ["vector-months", fixed(u.vector_months, 4), "usage-vector-months"],
      ["GB-months", fixed(u.gb_months, 6), "usage-gb-months"],
      ["vectors stored", num(u.stored_vectors), "usage-stored"],
      ["plan", u.plan, "usage-plan"],
    ];
    $("usage-summary").replaceChildren(
      ...summary.map(([label, value, id]) => {
        const c = card(label, value);
        c.firstChild.id = id;
        return c;
      }),
    );
    drawBars($("usage-chart"), u.days.map((d) => [d.day.slice(5), d.calls]), "calls");
    const byCount = (obj) => Object.entries(obj || {}).sort((a, b) => b[1] - a[1]);
    fillTable($("usage-ops-table"), byCount(u.calls_by_operation).map(([op, n]) => [op, numCell(num(n))]), "no calls");
    fillTable(
      $("usage-keys-table"),
      byCount(u.calls_by_key).map(([k, n]) => [el("td", { class: "mono", text: k }), numCell(num(n))]),
      "no calls",
    );
    $("usage-body").hidden = false;
    $("invoice-month").textContent = `${month} · ${tenant}`;
    try {
      const inv = await api("GET", `/v1/invoices/${enc(month)}?tenant=${enc(tenant)}`);
      showError("invoice-error", null);
      fillTable(
        $("invoice-table"),
        inv.lines.map((l) => [
          l.description,
          numCell(`${num(l.quantity)} ${l.unit}`),
          numCell(num(l.allowance)),
          numCell(num(l.billable)),
          numCell(`${l.unit_price} ${inv.currency}`),
          numCell(`${l.amount} ${inv.currency}`),
        ]),
        "no lines",
      );
      $("invoice-total").textContent = `${inv.total} ${inv.currency}`;
    } catch (err) {
      showError("invoice-error", err);
      fillTable($("invoice-table"), [], "–");
      $("invoice-total").textContent = "";
    }
  }

  // ------------------------------------------------------------------ API keys

  async function openKeys(polled) {
    if (!polled) await fillTenants($("keys-tenant"));
    await loadKeys();
  }

  async function loadKeys() {
    const tenant = $("keys-tenant").value || state.me.tenant;
    let keys;
    try {
      keys = (await api("GET", `/v1/admin/keys?tenant=${enc(tenant)}`)).keys;
    } catch (err) {
      showError("keys-error", err);
      fillTable($("keys-table"), [], "–");
      return;
    }
    showError("keys-error", null);
    keys.sort((a, b) => a.created_at - b.created_at || a.id.localeCompare(b.id));
    fillTable(
      $("keys-table"),
      keys.map((k) => [
        el("td", { class: "mono", text: k.id }),
        k.tenant,
        k.role,
        k.collections.length ? k.collections.join(", ") : "all",
        k.description,
        day(k.created_at),
        k.expires_at ? day(k.expires_at) : "never",
        k.id === state.me.id
          ? el("td", { class: "hint", text: "this key" })
          : el("td", {}, el("button", { type: "button", class: "link", "data-key": k.id, text: "Revoke", onclick: onRevoke })),
      ]),
      "no keys",
    );
  }

  async function onRevoke(ev) {
    const button = ev.currentTarget;
    const id = button.dataset.key;
    if (!button.classList.contains("danger")) {
      // two steps: the first click arms the button, the second revokes
      button.classList.add("danger");
      button.textContent = `Confirm revoke ${id}`;
      return;
    }
    button.disabled = true;
    try {
      await api("DELETE", `/v1/admin/keys/${enc(id)}`);
      $("keys-status").textContent = `Key ${id} revoked: every router refuses it now.`;
      showError("keys-error", null);
    } catch (err) {
      showError("keys-error", err);
    }
    await loadKeys();
  }

  async function onCreateKey(ev) {
    ev.preventDefault();
    const collections = $("key-collections")
      .value.split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    const days = Number($("key-expires").value || 0);
    const body = {
      tenant: $("keys-tenant").value || state.me.tenant,
      role: $("key-role").value,
      collections,
      description: $("key-description").value,
      expires_in_s: Math.round(days * 86400),
    };
    $("key-create").disabled = true;
    try {
      const created = await api("POST", "/v1/admin/keys", body);
      $("new-key").textContent = created.key;
      $("new-key-box").hidden = false;
      $("keys-status").textContent = `Key ${created.info.id} created (${created.info.role}, tenant ${created.info.tenant}).`;
      showError("keys-error", null);
      $("key-description").value = "";
      $("key-collections").value = "";
    } catch (err) {
      showError("keys-error", err);
    } finally {
      $("key-create").disabled = false;
    }
    await loadKeys();
  }

  async function copyNewKey() {
    const text = $("new-key").textContent;
    try {
      await navigator.clipboard.writeText(text);
      $("new-key-copy").textContent = "Copied";
    } catch (err) {
      const range = document.createRange();
      range.selectNodeContents($("new-key"));
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
      $("new-key-copy").textContent = "Selected: press Ctrl+C";
    }
  }

  // ------------------------------------------------------------------ latency

  const opName = (o) => `${o.protocol} ${o.operation}`;

  async function loadLatency() {
    if (needsAdmin("latency")) return;
    const windowS = Number($("latency-window").value || 30);
    let rep;
    try {
      rep = await api("GET", `/v1/admin/latency?window_s=${windowS}`);
    } catch (err) {
      showError("latency-error", err);
      return;
    }
    showError("latency-error", null);
    const L = state.latency;
    const seen = new Set();
    for (const o of rep.operations) {
      const name = opName(o);
      seen.add(name);
      if (!L.series.has(name)) L.series.set(name, []);
      L.series.get(name).push({ t: rep.end, p50: o.p50_ms, p95: o.p95_ms, p99: o.p99_ms });
    }
    for (const [name, points] of L.series) {
      if (!seen.has(name)) points.push({ t: rep.end, p50: null, p95: null, p99: null }); // a gap
      if (points.length > LATENCY_POINTS_MAX) points.splice(0, points.length - LATENCY_POINTS_MAX);
    }
    L.last = rep;
    const names = [...L.series.keys()].sort();
    if (!L.selected || !L.series.has(L.selected)) {
      // a search if there is one (the busiest), else the busiest operation
      const ops = rep.operations;
      const search = ops.find((o) => /search/i.test(o.operation));
      L.selected = search ? opName(search) : ops.length ? opName(ops[0]) : "";
    }
    const select = $("latency-op");
    select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
    select.value = L.selected;
    fillTable(
      $("latency-table"),
      rep.operations.map((o) => [
        o.protocol,
        el("td", { class: "mono", text: o.operation }),
        numCell(num(o.count)),
        numCell(num(o.failed)),
        numCell(fixed(o.per_s, 2)),
        numCell(ms(o.p50_ms)),
        numCell(ms(o.p95_ms)),
        numCell(ms(o.p99_ms)),
      ]),
      "no requests in the window",
    );
    $("latency-updated").textContent =
      `${clock(rep.end)} · window ${fixed(rep.window_s, 0)} s` +
      (rep.window_s + 1 < rep.requested_window_s ? " (router younger than the window)" : "");
    drawLatency();
    $("latency-body").hidden = false;
  }

  function drawLatency() {
    const L = state.latency;
    const points = L.series.get(L.selected) || [];
    drawLines($("latency-chart"), points, [
      ["p50", "q50"],
      ["p95", "q95"],
      ["p99", "q99"],
    ], L.selected);
  }

  // ------------------------------------------------------------------ charts (SVG)

  const W = 900;
  const H = 260;
  const PAD = { left: 56, right: 16, top: 28, bottom: 30 };

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function frame(yMax, yLabel) {
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": yLabel });
    const plotH = H - PAD.top - PAD.bottom;
    for (let i = 0; i <= 4; i += 1) {
      const y = PAD.top + plotH - (plotH * i) / 4;
      root.append(svg("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y, y2: y }));
      const v = (yMax * i) / 4;
      root.append(svg("text", { class: "axis", x: PAD.left - 6, y: y + 4, "text-anchor": "end" }, yLabel === "ms" ? ms(v) : num(Math.round(v))));
    }
    root.append(svg("text", { class: "axis", x: 4, y: 14 }, yLabel));
    return root;
  }

  function noData(container, text) {
    const root = svg("svg", { viewBox: `0 0 ${W} 60` });
    root.append(svg("text", { class: "nodata", x: W / 2, y: 34, "text-anchor": "middle" }, text));
    container.replaceChildren(root);
  }

  function drawBars(container, pairs, label) {
    if (!pairs.length) return noData(container, "no calls this month");
    const yMax = niceMax(Math.max(...pairs.map((p) => p[1])));
    const root = frame(yMax, label);
    const plotW = W - PAD.left - PAD.right;
    const plotH = H - PAD.top - PAD.bottom;
    const step = plotW / pairs.length;
    const barW = Math.max(2, Math.min(40, step * 0.7));
    pairs.forEach(([name, v], i) => {
      const h = (plotH * v) / yMax;
      const x = PAD.left + step * i + (step - barW) / 2;
      const bar = svg("rect", { class: "bar", x, y: PAD.top + plotH - h, width: barW, height: Math.max(0, h) });
      bar.append(svg("title", {}, `${name}: ${num(v)} ${label}`));
      root.append(bar);
      if (pairs.length <= 16 || i % Math.ceil(pairs.length / 16) === 0) {
        root.append(svg("text", { class: "axis", x: x + barW / 2, y: H - 10, "text-anchor": "middle" }, name));
      }
    });
    container.replaceChildren(root);
  }

  function drawLines(container, points, series, title) {
    const values = points.flatMap((p) => series.map(([k]) => p[k])).filter((v) => v !== null && v !== undefined);
    if (!values.length) return noData(container, title ? `no requests for ${title} yet` : "no requests yet");
    const yMax = niceMax(Math.max(...values));
    const root = frame(yMax, "ms");
    const plotW = W - PAD.left - PAD.right;
    const plotH = H - PAD.top - PAD.bottom;
    const t0 = points[0].t;
    const t1 = Math.max(points[points.length - 1].t, t0 + 1);
    const x = (t) => PAD.left + (plotW * (t - t0)) / (t1 - t0);
    const y = (v) => PAD.top + plotH - (plotH * v) / yMax;
    series.forEach(([k, cls], i) => {
      let run = [];
      const flush = () => {
        if (run.length === 1) root.append(svg("circle", { class: cls, cx: run[0][0], cy: run[0][1], r: 2.5 }));
        else if (run.length > 1) root.append(svg("polyline", { class: `line ${cls}`, points: run.map((p) => p.join(",")).join(" ") }));
        run = [];
      };
      for (const p of points) {
        if (p[k] === null || p[k] === undefined) flush();
        else run.push([x(p.t).toFixed(1), y(p[k]).toFixed(1)]);
      }
      flush();
      const lx = PAD.left + 10 + i * 70;
      root.append(svg("rect", { class: cls, x: lx, y: 8, width: 12, height: 4 }));
      root.append(svg("text", { class: "legend", x: lx + 16, y: 14 }, k));
    });
    root.append(svg("text", { class: "legend", x: W - PAD.right, y: 14, "text-anchor": "end" }, title));
    root.append(svg("text", { class: "axis", x: PAD.left, y: H - 8 }, clock(t0)));
    root.append(svg("text", { class: "axis", x: W - PAD.right, y: H - 8, "text-anchor": "end" }, clock(t1)));
    container.replaceChildren(root);
  }

  // ------------------------------------------------------------------ playground

  async function openPlayground() {
    let colls;
    try {
      colls = await listCollections();
    } catch (err) {
      showError("pg-error", err);
      return;
    }
    const select = $("pg-collection");
    const keep = select.value;
    select.replaceChildren(...colls.map((c) => el("option", { value: c.name, text: `${c.name} (dim ${c.dim}, ${c.metric})` })));
    if (colls.some((c) => c.name === keep)) select.value = keep;
    $("pg-run").disabled = !colls.length;
    if (!colls.length) $("pg-error").textContent = "This tenant has no collections to search.";
  }

  function randomVector() {
    const coll = state.collections.find((c) => c.name === $("pg-collection").value);
    if (!coll) return;
    const v = [];
    for (let i = 0; i < coll.dim; i += 1) {
      // Box-Muller: a direction uniform on the sphere once normalized
      const u = 1 - Math.random();
      v.push(Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * Math.random()));
    }
    const norm = Math.hypot(...v) || 1;
    $("pg-vector").value = JSON.stringify(v.map((x) => Number((x / norm).toFixed(5))));
  }

  async function onSearch(ev) {
    ev.preventDefault();
    showError("pg-error", null);
    const name = $("pg-collection").value;
    let vector;
    let filter;
    try {
      vector = JSON.parse($("pg-vector").value);
      if (!Array.isArray(vector)) throw new Error("not an array");
    } catch (err) {
      $("pg-error").textContent = `vector: must be a JSON array of numbers (${err.message})`;
      return;
    }
    const filterText = $("pg-filter").value.trim();
    if (filterText) {
      try {
        filter = JSON.parse(filterText);
      } catch (err) {
        $("pg-error").textContent = `filter: must be JSON (${err.message})`;
        return;
      }
    }
    const body = { vector, k: Number($("pg-k").value || 10), with_payload: $("pg-payload").checked };
    if (filter !== undefined) body.filter = filter;
    $("pg-run").disabled = true;
    const t0 = performance.now();
    try {
      const r = await api("POST", `/v1/collections/${enc(name)}/search`, body);
      const took = performance.now() - t0;
      fillTable(
        $("pg-hits"),
        r.hits.map((h, i) => [
          numCell(i + 1),
          el("td", { class: "mono", text: h.id }),
          numCell(fixed(h.score, 4)),
          el("td", { class: "payload mono", text: h.payload ? JSON.stringify(h.payload) : "" }),
        ]),
        "no hits",
      );
      $("pg-summary").textContent =
        `${r.hits.length} hits in ${ms(took)} ms (as this browser saw it) · shards answered ` +
        `${r.shards.answered} of ${r.shards.total}`;
      $("pg-curl").textContent =
        `curl -s -X POST ${location.origin}/v1/collections/${enc(name)}/search \\\n` +
        `  -H "Authorization: Bearer $QUARTZ_API_KEY" -H 'content-type: application/json' \\\n` +
        `  -d '${JSON.stringify(body).replace(/'/g, "'\\''")}'`;
      $("pg-result").hidden = false;
    } catch (err) {
      showError("pg-error", err);
      $("pg-result").hidden = true;
    } finally {
      $("pg-run").disabled = false;
    }
  }

  // ------------------------------------------------------------------ wiring

  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const key = $("apikey").value.trim();
      $("signin-button").disabled = true;
      $("signin-error").textContent = "";
      try {
        await signIn(key, false);
      } catch (err) {
        $("signin-error").textContent = err.message;
      } finally {
        $("signin-button").disabled = false;
      }
    });
    $("signout").addEventListener("click", () => signOut(""));
    for (const b of document.querySelectorAll(".tabs button")) {
      b.addEventListener("click", () => selectTab(b.dataset.tab));
    }
    $("cluster-refresh").addEventListener("click", () => loadCluster());
    $("collections-refresh").addEventListener("click", () => loadCollections(false, true));
    $("usage-load").addEventListener("click", () => loadUsage());
    $("usage-tenant").addEventListener("change", () => loadUsage());
    $("keys-tenant").addEventListener("change", () => loadKeys());
    $("keys-refresh").addEventListener("click", () => loadKeys());
    $("key-form").addEventListener("submit", onCreateKey);
    $("new-key-copy").addEventListener("click", copyNewKey);
    $("new-key-hide").addEventListener("click", () => {
      $("new-key").textContent = "";
      $("new-key-box").hidden = true;
      $("new-key-copy").textContent = "Copy";
    });
    $("latency-op").addEventListener("change", () => {
      state.latency.selected = $("latency-op").value;
      drawLatency();
    });
    $("latency-window").addEventListener("change", () => {
      state.latency.series = new Map(); // quantiles over another window: a new chart
      loadLatency();
    });
    $("pg-random").addEventListener("click", randomVector);
    $("search-form").addEventListener("submit", onSearch);

    const saved = sessionStorage.getItem(STORAGE_KEY);
    if (saved) {
      signIn(saved, true).catch((err) => signOut(`Signed out: ${err.message}`));
    } else {
      signOut("");
    }
  });
})();
