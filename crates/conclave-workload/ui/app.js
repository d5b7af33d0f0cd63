// The party page: everything it shows comes from this workload's JSON API (/api/...).
"use strict";

const $ = (sel) => document.querySelector(sel);
const SVG = "http://www.w3.org/2000/svg";
const fmt = new Intl.NumberFormat("en-US");
const usd = (n) => (n == null ? "—" : "$" + fmt.format(n));

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

async function api(path, options = {}) {
  const resp = await fetch(path, options);
  // The session ended (expired, signed out elsewhere, workload restarted): sign in again.
  if (resp.status === 401) {
    location.href = "/auth/login?next=" + encodeURIComponent(location.pathname);
    return { ok: false, status: 401, body: null };
  }
  let body = null;
  try { body = await resp.json(); } catch (_) { body = null; }
  return { ok: resp.ok, status: resp.status, body };
}

const when = (secs) => (secs ? new Date(secs * 1000).toLocaleString() : "—");

// --- status, attestation, keys ---------------------------------------------------------------

let status = null;
let lastStatusText = null;

function renderBadge(s) {
  const badge = $("#tee-badge");
  if (!s.tee) {
    badge.textContent = "NO TEE — not attested, nothing will be released";
    badge.dataset.kind = "none";
  } else if (s.simulated) {
    badge.textContent = "SIMULATED TEE — no hardware protection";
    badge.dataset.kind = "sim";
  } else {
    badge.textContent = "AMD SEV-SNP hardware (" + s.platform + ")";
    badge.dataset.kind = "hardware";
  }
}

function renderAttestation(s) {
  const a = s.attestation;
  const p = $("#attestation-status");
  p.dataset.state = a.state;
  const tbody = $("#claims tbody");
  tbody.replaceChildren();
  if (a.state === "attested") {
    p.textContent = "Attested by " + a.claims.iss + " at " + when(a.attested_at) +
      "; the token is valid until " + when(a.expires_at) + " and is renewed before then.";
    const names = Object.keys(a.claims).sort();
    for (const name of names) {
      let value = a.claims[name];
      value = typeof value === "object" ? JSON.stringify(value) : String(value);
      if (["iat", "exp", "nbf"].includes(name)) value += " (" + when(a.claims[name]) + ")";
      tbody.append(el("tr", {},
        el("th", { scope: "row" }, el("code", { text: name })),
        el("td", {}, el("code", { class: "value", text: value })),
        el("td", { text: s.claim_explanations[name] || "" })));
    }
  } else if (a.state === "pending") {
    p.textContent = "Attesting: asking the platform for evidence and the attestation service for a token…";
  } else if (a.state === "failed") {
    p.textContent = "Attestation failed: " + a.reason;
  } else {
    p.textContent = "Not attested: " + a.reason + ".";
  }
}

function releaseText(r) {
  if (r.state === "released") return "Released to this workload at " + when(r.at);
  if (r.state === "denied") {
    const who = r.by === "vault" ? "Denied by the vault" + (r.status ? " (HTTP " + r.status + ")" : "") : "Not released";
    return who + ": " + r.reason;
  }
  return "Not requested yet";
}

function renderKeys(s) {
  const tbody = $("#keys-table tbody");
  tbody.replaceChildren();
  for (const d of s.datasets) {
    const button = el("button", { type: "button", "data-company": d.company,
      text: d.release.state === "released" ? "Release again" : "Request release" });
    button.addEventListener("click", () => requestRelease(d.company, button));
    const state = el("td", { class: "release", "data-state": d.release.state, text: releaseText(d.release) });
    tbody.append(el("tr", { "data-company": d.company },
      el("th", { scope: "row", text: d.display_name + (d.own ? " (ours)" : "") }),
      el("td", {}, el("code", { text: d.key })),
      state,
      el("td", {}, button)));
  }
}

function renderUser(user) {
  if (!user) return;
  const roles = user.roles.length ? user.roles.join(", ") : "no role";
  $("#user-name").textContent = "Signed in as " + user.name + " (" + roles + ")";
}

$("#sign-out").addEventListener("click", async () => {
  await fetch("/auth/logout", { method: "POST" });
  location.href = "/auth/login?next=/";
});

async function requestRelease(company, button) {
  button.disabled = true;
  await api("/api/keys/" + encodeURIComponent(company) + "/release", { method: "POST" });
  button.disabled = false;
  await refreshStatus();
  const own = status.datasets.find((d) => d.own);
  if (own && own.company === company) loadRecords();
}

async function refreshStatus() {
  const r = await api("/api/status");
  if (!r.ok) return;
  // Re-render only what changed, so keyboard focus stays where it is.
  const text = JSON.stringify(r.body);
  if (status && text === lastStatusText) return;
  lastStatusText = text;
  status = r.body;
  document.title = status.display_name + " — Conclave";
  $("#party-name").textContent = status.display_name;
  renderBadge(status);
  renderUser(status.user);
  renderAttestation(status);
  renderKeys(status);
  const section = $("#analytics");
  section.hidden = !status.analysis_enabled;
  const analyst = status.user && status.user.roles.includes("analyst");
  $("#run-analysis").disabled = !analyst;
  $("#analysis-status").textContent = analyst ? $("#analysis-status").textContent
    : "Running the analysis and seeing its results needs the analyst role; you are signed in as " +
      status.user.name + ".";
  $("#analytics-hint").textContent = "Releases every granted key, decrypts all datasets in parallel inside the TEE, and " +
    "releases only aggregates over groups of at least k = " + status.k + " records (ages counted from " +
    status.reference_year + ").";
}

// --- own records -----------------------------------------------------------------------------

const PAGE = 25;
let offset = 0;
let query = "";

async function loadRecords() {
  const info = $("#records-status");
  const r = await api("/api/records?offset=" + offset + "&limit=" + PAGE + "&q=" + encodeURIComponent(query));
  const tbody = $("#records tbody");
  tbody.replaceChildren();
  if (!r.ok) {
    info.dataset.state = "denied";
    info.textContent = "No records shown: " + (r.body && r.body.error ? r.body.error.message : "HTTP " + r.status);
    $("#page-info").textContent = "";
    $("#prev").disabled = $("#next").disabled = true;
    return;
  }
  info.dataset.state = "ok";
  const total = r.body.total;
  info.textContent = fmt.format(total) + (query ? " records match “" + query + "”." : " records, decrypted in the TEE.");
  for (const rec of r.body.records) {
    tbody.append(el("tr", {},
      el("td", { text: rec.name }), el("td", { text: rec.phone }), el("td", { class: "num", text: rec.age }),
      el("td", { class: "num", text: fmt.format(rec.salary) }), el("td", { text: rec.eye_color }),
      el("td", { text: rec.favorite_color }), el("td", { text: rec.address }), el("td", { text: rec.postal_code }),
      el("td", { text: rec.city }), el("td", { text: rec.country })));
  }
  const pages = Math.max(1, Math.ceil(total / PAGE));
  $("#page-info").textContent = "Page " + (Math.floor(offset / PAGE) + 1) + " of " + pages;
  $("#prev").disabled = offset === 0;
  $("#next").disabled = offset + PAGE >= total;
}

$("#search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  query = $("#search").value;
  offset = 0;
  loadRecords();
});
$("#prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); loadRecords(); });
$("#next").addEventListener("click", () => { offset += PAGE; loadRecords(); });

// --- analytics -------------------------------------------------------------------------------

function barChart(container, groups, { value = (g) => g.count, label = (g) => g.label, format = fmt.format, title = "" } = {}) {
  const max = Math.max(1, ...groups.map(value));
  // The label column fits the longest label (about 7 px a character at the labels' size).
  const longest = Math.max(0, ...groups.map((g) => String(label(g)).length));
  const rowH = 22, labelW = Math.min(260, Math.max(120, 7 * longest + 12)), valueW = 80, width = labelW + 300;
  const chart = svg("svg", { viewBox: "0 0 " + width + " " + (groups.length * rowH + 4), role: "img" });
  chart.append(Object.assign(svg("title"), { textContent: title }));
  groups.forEach((g, i) => {
    const y = i * rowH + 2;
    const w = Math.max(1, (value(g) / max) * (width - labelW - valueW));
    const name = svg("text", { x: labelW - 6, y: y + 15, "text-anchor": "end", class: "bar-label" });
    name.textContent = label(g);
    const bar = svg("rect", { x: labelW, y: y + 3, width: w, height: rowH - 6, class: "bar", rx: 2 });
    const t = svg("title"); t.textContent = label(g) + ": " + format(value(g)); bar.append(t);
    const v = svg("text", { x: labelW + w + 6, y: y + 15, class: "bar-value" });
    v.textContent = format(value(g));
    chart.append(name, bar, v);
  });
  container.append(chart);
}

function suppressedNote(table) {
  return table.suppressed_groups
    ? el("p", { class: "suppressed", text: table.suppressed_groups + " group(s) with fewer than k records withheld." })
    : "";
}

function perCompany(container, result, pick, opts = {}) {
  container.replaceChildren();
  for (const [company, c] of Object.entries(result.companies)) {
    const box = el("div", { class: "company-chart" }, el("h4", { text: companyName(company) }));
    const t = pick(c);
    barChart(box, t.groups, { title: companyName(company), ...opts });
    box.append(suppressedNote(t));
    container.append(box);
  }
}

function companyName(id) {
  const d = status && status.datasets.find((x) => x.company === id);
  return d ? d.display_name : id;
}

// Country names in the records that Natural Earth spells differently.
const MAP_NAMES = { "United States": "United States of America" };
let world = null;

// Colours `map` (an <svg> of the world) by average salary per country; `groups` are
// {label: country, count, average_salary}; the legend goes in `legend`.
async function drawMap(map, legend, groups) {
  if (!world) world = await (await fetch("/ui/world-110m.json")).json();
  for (const p of map.querySelectorAll("path")) p.remove();
  const salaries = new Map();
  for (const g of groups) if (g.average_salary != null) salaries.set(MAP_NAMES[g.label] || g.label, g);
  const values = [...salaries.values()].map((g) => g.average_salary);
  const lo = Math.min(...values), hi = Math.max(...values);
  // Sequential blues, light (low) to dark (high).
  const scale = ["#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b"];
  const colour = (v) => scale[Math.min(scale.length - 1, Math.floor(((v - lo) / Math.max(1, hi - lo)) * scale.length))];
  let drawn = 0;
  for (const c of world.countries) {
    const g = salaries.get(c.name);
    const path = svg("path", { d: c.d, class: g ? "country has-data" : "country", "data-country": c.name });
    if (g) {
      path.setAttribute("fill", colour(g.average_salary));
      path.setAttribute("data-salary", g.average_salary);
      drawn++;
    }
    const t = svg("title");
    t.textContent = c.name + (g ? ": " + usd(g.average_salary) + " average over " + fmt.format(g.count) + " records" : ": no released data");
    path.append(t);
    map.append(path);
  }
  const missing = [...salaries.keys()].filter((n) => !world.countries.some((c) => c.name === n));
  legend.replaceChildren();
  const swatches = el("span", { class: "swatches" });
  scale.forEach((c, i) => {
    const s = el("span", { class: "swatch" });
    s.style.background = c;
    s.title = usd(Math.round(lo + ((hi - lo) * i) / scale.length)) + " and up";
    swatches.append(s);
  });
  legend.append(el("span", { text: usd(lo) + " " }), swatches, el("span", { text: " " + usd(hi) }),
    el("span", { class: "legend-note", text: " · " + drawn + " countries coloured; grey: no released data" +
      (missing.length ? "; too small to draw at this scale: " + missing.join(", ") : "") }));
}

function renderResults(view) {
  const result = view.result;
  $("#results").hidden = !result;
  if (!result) return;
  $("#suppression-note").textContent = "Computed over " + fmt.format(result.total_records) +
    " records. Every group shown has at least k = " + result.k + " records; smaller groups are withheld and counted, never silently dropped." +
    (result.top_countries_suppressed ? " " + result.top_countries_suppressed + " country group(s) withheld." : "");

  const top = $("#top-countries tbody");
  top.replaceChildren();
  result.top_countries.forEach((c, i) => {
    const cities = c.top_cities.groups.map((g) => g.label + " (" + fmt.format(g.count) + ")").join(", ") +
      (c.top_cities.suppressed_groups ? " · " + c.top_cities.suppressed_groups + " small city group(s) withheld" : "");
    top.append(el("tr", {}, el("td", { class: "num", text: i + 1 }), el("th", { scope: "row", text: c.country }),
      el("td", { class: "num", text: fmt.format(c.count) }), el("td", { text: cities })));
  });

  const gen = $("#salary-generation");
  gen.replaceChildren();
  barChart(gen, result.salary_by_generation.groups, { value: (g) => g.average_salary, format: usd, title: "Average salary by generation" });
  gen.append(suppressedNote(result.salary_by_generation));

  perCompany($("#generations"), result, (c) => c.generations);
  perCompany($("#eye-colors"), result, (c) => c.eye_colors);
  perCompany($("#favorite-colors"), result, (c) => c.favorite_colors);

  const sc = $("#salary-company");
  sc.replaceChildren();
  const companies = Object.entries(result.companies).map(([id, c]) => ({ label: companyName(id), count: c.records, average_salary: c.average_salary || 0 }));
  barChart(sc, companies, { value: (g) => g.average_salary, format: usd, title: "Average salary per company" });

  const sct = $("#salary-country tbody");
  sct.replaceChildren();
  for (const g of result.salary_by_country.groups) {
    sct.append(el("tr", {}, el("th", { scope: "row", text: g.label }), el("td", { class: "num", text: fmt.format(g.count) }),
      el("td", { class: "num", text: usd(g.average_salary) })));
  }
  if (result.salary_by_country.suppressed_groups) {
    sct.append(el("tr", {}, el("td", { colspan: 3, class: "suppressed", text: result.salary_by_country.suppressed_groups + " country group(s) with fewer than k records withheld." })));
  }

  const inputs = $("#inputs tbody");
  inputs.replaceChildren();
  for (const i of view.inputs) {
    inputs.append(el("tr", {}, el("th", { scope: "row", text: companyName(i.company) }), el("td", { class: "num", text: fmt.format(i.records) }),
      el("td", {}, el("code", { text: i.sha256 })), el("td", {}, el("code", { text: i.key }))));
  }
  drawMap($("#map"), $("#map-legend"), result.salary_by_country.groups);
}

let shownResult = null;

// The analysis states are the workload's (/api/status: analysis_states), not named here.
const analysisActive = (state) => status.analysis_states.active.includes(state);
const analysisFinal = (state) => status.analysis_states.final.includes(state);

function renderAnalysis(view) {
  const running = analysisActive(view.state);
  $("#run-analysis").disabled = running;
  $("#cancel-analysis").disabled = !running;
  const st = $("#analysis-status");
  st.dataset.state = view.state;
  const words = {
    idle: "Not run yet.", releasing: "Asking each vault to release its key…", hashing: "Hashing the ciphertexts the receipt will name…",
    running: "Decrypting and analysing inside the TEE…", done: "Done.", failed: "Failed: " + (view.error || ""),
    cancelled: "Cancelled: nothing was released.",
  };
  st.textContent = words[view.state] || view.state;
  const box = $("#progress");
  box.replaceChildren();
  if (view.state !== status.analysis_states.initial) {
    for (const d of view.datasets) {
      const id = "progress-" + d.company;
      const pct = Math.round(d.percent);
      const bar = el("div", { class: "bar-outer", role: "progressbar", id, "aria-valuemin": 0, "aria-valuemax": 100,
        "aria-valuenow": pct, "aria-label": d.display_name + " progress", "data-phase": d.phase });
      const inner = el("div", { class: "bar-inner" });
      inner.style.width = pct + "%";
      bar.append(inner);
      box.append(el("div", { class: "progress-row" },
        el("span", { class: "progress-name", text: d.display_name }), bar,
        el("span", { class: "progress-text", text: pct + "% · " + fmt.format(d.records) + " / " + fmt.format(d.records_total) +
          " records · " + fmt.format(Math.round(d.rate)) + " rec/s · " + d.phase })));
    }
  }
  $("#receipt-link").hidden = !view.receipt_available;
  if (view.result && view.result !== shownResult && view.state === status.analysis_states.success) {
    shownResult = view.result;
    renderResults(view);
  } else if (!view.result) {
    $("#results").hidden = true;
  }
}

let events = null;

function followAnalysis() {
  if (events) return;
  events = new EventSource("/api/analysis/events");
  events.addEventListener("analysis", (e) => {
    const view = JSON.parse(e.data);
    renderAnalysis(view);
    if (analysisFinal(view.state)) {
      events.close();
      events = null;
      refreshStatus();
    }
  });
  events.onerror = () => { if (events) { events.close(); events = null; } };
}

$("#run-analysis").addEventListener("click", async () => {
  shownResult = null;
  const r = await api("/api/analysis", { method: "POST" });
  if (!r.ok) {
    $("#analysis-status").textContent = "Refused: " + (r.body && r.body.error ? r.body.error.message : "HTTP " + r.status);
    return;
  }
  renderAnalysis(r.body);
  followAnalysis();
});
$("#cancel-analysis").addEventListener("click", () => api("/api/analysis/cancel", { method: "POST" }));

// --- analysis contracts ----------------------------------------------------------------------

let contractEvents = null;

function approvalsCell(c) {
  const td = el("td");
  for (const a of c.approvals) {
    td.append(el("span", { class: "approval", "data-status": a.status,
      text: (a.status === "approved" ? "✓ " : "✗ ") + a.display_name + (a.status === "approved" ? " approved" : " has not approved") }), " ");
  }
  for (const why of c.invalid_approvals) td.append(el("p", { class: "suppressed", text: "An approval does not verify: " + why }));
  return td;
}

function renderContracts(list) {
  const tbody = $("#contracts-table tbody");
  tbody.replaceChildren();
  for (const c of list.contracts) {
    const run = el("button", { type: "button", "data-contract": c.id, text: "Run" });
    run.addEventListener("click", () => runContract(c.id));
    tbody.append(el("tr", { "data-contract": c.id },
      el("th", { scope: "row" }, el("strong", { text: c.name }), el("p", { class: "hint", text: c.description })),
      el("td", {}, el("code", { title: c.digest, text: c.digest.slice(0, 16) + "…" })),
      el("td", { class: "num", text: String(c.k) + (c.epsilon != null ? ", ε " + c.epsilon : "") }),
      approvalsCell(c),
      el("td", {}, run)));
  }
  const broken = $("#contracts-broken");
  broken.hidden = list.broken.length === 0;
  broken.textContent = list.broken.map((b) => b.id + ": " + b.error).join("; ");
}

// A query's rows as a table, and as a bar chart of `records` by its text columns.
function renderQuery(q) {
  const box = el("div", { class: "contract-query", "data-query": q.name });
  box.append(el("h3", { text: q.name }));
  if (q.suppressed_groups) {
    box.append(el("p", { class: "suppressed", text: q.suppressed_groups + " group(s) with fewer than k records withheld." }));
  }
  const labels = q.columns.filter((c) => /Utf8|Dictionary/.test(c.data_type)).map((c) => c.name);
  if (labels.length && q.columns.some((c) => c.name === "records") && q.rows.length && q.rows.length <= 40) {
    const chart = el("div", { class: "chart" });
    barChart(chart, q.rows, { value: (r) => r.records, label: (r) => labels.map((l) => r[l]).join(" / "), title: q.name });
    box.append(chart);
  }
  // A query of average salaries by country is also drawn on the world map.
  const names = q.columns.map((c) => c.name);
  if (["country", "records", "average_salary"].every((n) => names.includes(n)) && q.rows.length) {
    const title = "map-title-" + q.name;
    const map = svg("svg", { class: "map", role: "img", "aria-labelledby": title, viewBox: "0 0 960 480", preserveAspectRatio: "xMidYMid meet" });
    const t = svg("title", { id: title });
    t.textContent = "World map of " + q.name;
    map.append(t);
    const legend = el("figcaption");
    box.append(el("figure", { class: "map-figure" }, map, legend));
    drawMap(map, legend, q.rows.map((r) => ({ label: r.country, count: r.records, average_salary: r.average_salary })));
  }
  const head = el("tr", {}, ...q.columns.map((c) => el("th", { scope: "col", text: c.name })));
  const body = el("tbody");
  for (const r of q.rows) {
    body.append(el("tr", {}, ...q.columns.map((c) => {
      const v = r[c.name];
      return typeof v === "number" ? el("td", { class: "num", text: fmt.format(v) }) : el("td", { text: v == null ? "—" : String(v) });
    })));
  }
  box.append(el("div", { class: "scroll" }, el("table", {}, el("thead", {}, head), body)));
  return box;
}

function renderContractRun(v) {
  const p = $("#contract-status");
  p.dataset.state = v.state === "done" ? "done" : v.state;
  const name = v.contract ? "“" + v.contract + "”" : "";
  const texts = {
    idle: "No contract has run yet.",
    releasing: "Attesting " + name + " and asking each owner's vault for its key…",
    hashing: "Hashing the inputs' ciphertext for the receipt…",
    running: "Running " + name + " inside the TEE…",
    done: name + " finished; its result was sealed to " + (v.sealed_to || []).join(", ") + ".",
    failed: name + " released nothing: " + (v.error || ""),
    cancelled: v.error || "Cancelled.",
  };
  p.textContent = texts[v.state] || v.state;
  $("#cancel-contract").disabled = !analysisActive(v.state);
  for (const b of document.querySelectorAll("#contracts-table button")) b.disabled = analysisActive(v.state);
  const releases = $("#contract-releases");
  releases.hidden = v.releases.length === 0;
  const tbody = releases.querySelector("tbody");
  tbody.replaceChildren();
  for (const r of v.releases) {
    tbody.append(el("tr", { "data-table": r.table },
      el("th", { scope: "row", text: r.table }),
      el("td", { text: r.display_name || r.provider }),
      el("td", { class: "release", "data-state": r.release.state, text: releaseText(r.release) })));
  }
  const progress = $("#contract-progress");
  progress.replaceChildren();
  if (v.progress && analysisActive(v.state)) {
    const pr = v.progress;
    const reading = pr.stage === "reading";
    // Reading decodes each input once for all the queries' aggregates: its bar is the records
    // decoded (when shown: not with differential privacy); releasing, the queries released.
    const pct = v.state === "done" ? 100
      : reading ? (pr.records_total > 0 ? (100 * pr.records) / pr.records_total : 100)
      : (100 * pr.queries_released) / Math.max(1, pr.queries);
    const label = reading ? "Reading inputs for " + pr.queries + " queries"
      : "Query " + Math.min(pr.queries, pr.queries_released + 1) + " of " + pr.queries;
    const detail = reading
      ? (pr.differential_privacy ? "records not shown (differential privacy)"
        : fmt.format(pr.records) + " of " + fmt.format(pr.records_total) + " records decrypted")
      : "releasing " + (pr.query || "results");
    progress.append(el("div", { class: "progress-row" },
      el("span", { text: label }),
      el("div", { class: "bar-outer", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.round(Math.min(100, pct))) },
        el("div", { class: "bar-inner", style: "width:" + Math.min(100, pct) + "%" })),
      el("span", { class: "progress-text", text: detail })));
  }
  const sealed = $("#contract-receipt");
  sealed.hidden = !v.receipt_available;
  if (v.receipt_available) {
    $("#contract-sealed-to").textContent = v.sealed_to.join(", ");
    const inputs = $("#contract-inputs tbody");
    inputs.replaceChildren();
    for (const i of v.inputs) {
      inputs.append(el("tr", {},
        el("th", { scope: "row", text: i.company }),
        el("td", { class: "num", text: fmt.format(i.records) }),
        el("td", {}, el("code", { title: i.sha256, text: i.sha256.slice(0, 16) + "…" })),
        el("td", {}, el("code", { text: i.key.split("/").pop().slice(0, 12) + "…", title: i.key }))));
    }
  }
  const results = $("#contract-results");
  results.replaceChildren();
  if (v.result_withheld) results.append(el("p", { class: "note", text: v.result_withheld }));
  if (v.result) for (const q of v.result.queries) results.append(renderQuery(q));
}

function followContractRun() {
  if (contractEvents) return;
  contractEvents = new EventSource("/api/contracts/run/events");
  contractEvents.addEventListener("contract-run", (e) => {
    const view = JSON.parse(e.data);
    renderContractRun(view);
    if (analysisFinal(view.state)) { contractEvents.close(); contractEvents = null; }
  });
  contractEvents.onerror = () => { if (contractEvents) { contractEvents.close(); contractEvents = null; } };
}

async function runContract(id) {
  const r = await api("/api/contracts/" + encodeURIComponent(id) + "/run", { method: "POST" });
  if (!r.ok) {
    $("#contract-status").textContent = "Refused: " + (r.body && r.body.error ? r.body.error.message : "HTTP " + r.status);
    return;
  }
  renderContractRun(r.body);
  followContractRun();
}
$("#cancel-contract").addEventListener("click", () => api("/api/contracts/run/cancel", { method: "POST" }));

async function loadContracts() {
  const r = await api("/api/contracts");
  if (!r.ok) return;
  $("#contracts").hidden = false;
  renderContracts(r.body);
  const run = await api("/api/contracts/run");
  if (run.ok) {
    renderContractRun(run.body);
    if (analysisActive(run.body.state)) followContractRun();
  }
}

// --- start -----------------------------------------------------------------------------------

async function start() {
  await refreshStatus();
  loadRecords();
  if (status && status.user.roles.includes("analyst")) loadContracts();
  if (status && status.analysis_enabled && status.user.roles.includes("analyst")) {
    const r = await api("/api/analysis");
    if (r.ok) {
      renderAnalysis(r.body);
      if (analysisActive(r.body.state)) followAnalysis();
    }
  }
  // Attestation and releases change in the background (re-attestation, the own key's release).
  let lastOwn = null;
  setInterval(async () => {
    await refreshStatus();
    const own = status && status.datasets.find((d) => d.own);
    const state = own ? own.release.state : null;
    if (state !== lastOwn) { lastOwn = state; loadRecords(); }
  }, 2000);
}

start();
