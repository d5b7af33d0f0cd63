// The demo portal: the layout and live status come from /api/demo, audit logs from /api/audit/<party>.
"use strict";

const $ = (s) => document.querySelector(s);
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else if (v != null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}
const when = (ms) => new Date(ms).toLocaleTimeString();

function attestation(s) {
  if (!s) return "not answering";
  const a = s.attestation;
  if (a.state === "attested") return "attested (" + (s.platform || "?") + ")";
  return a.state + (a.reason ? ": " + a.reason : "");
}

function keys(s) {
  if (!s) return "";
  return s.datasets.map((d) => d.display_name + ": " + (d.release.state === "denied" ? "denied — " + d.release.reason : d.release.state)).join("\n");
}

let framesDrawn = false;

async function refresh() {
  const demo = await (await fetch("/api/demo")).json();
  const tbody = $("#workloads tbody");
  tbody.replaceChildren();
  for (const w of demo.workloads) {
    tbody.append(el("tr", { "data-workload": w.id },
      el("th", { scope: "row" }, el("a", { href: w.url, text: w.name })),
      el("td", { text: w.role }),
      el("td", { class: "att", text: attestation(w.status) }),
      el("td", { class: "keys", text: keys(w.status) }),
      el("td", {}, el("code", { text: w.measurement ? w.measurement.slice(0, 16) + "…" : "none (no TEE)" }))));
  }
  if (!framesDrawn) {
    framesDrawn = true;
    // One card per party, in the demo's own order (demo.parties, served by the demo).
    for (const p of demo.parties) {
      const w = demo.workloads.find((x) => x.id === p.id);
      if (!w) continue;
      const users = demo.sign_in.filter((u) => u.party === w.party);
      $("#frames").append(el("article", { class: "party-card", "data-workload": w.id },
        el("h3", {}, el("a", { href: w.url, text: w.name })),
        el("p", { text: "Sign in as " + users.map((u) => u.username + " (" + u.roles.join(", ") + ")").join(" or ") }),
        el("p", { class: "pin" }, "TLS key ", el("code", { text: "pin-sha256 " + (w.pin_sha256 || "?") }),
          w.pin_attested ? " — checked against its attestation" : " — NOT attested")));
    }
    const services = $("#services");
    services.append(el("li", { text: "Attestation service: " + demo.attestation }));
    for (const p of demo.parties) services.append(el("li", { text: p.name + " vault: " + p.vault + " — key " + p.key }));
    services.append(el("li", { text: "Local CA certificate: " + demo.ca }));
    services.append(el("li", { text: "State: " + demo.state_dir }));
  }
  const audits = $("#audits");
  const boxes = [];
  for (const p of demo.parties) {
    const r = await fetch("/api/audit/" + p.id);
    const log = r.ok ? await r.json() : { value: [] };
    const rows = (log.value || []).slice(-40).reverse().map((e) => {
      const ev = e.event || e;
      return el("tr", { "data-outcome": ev.outcome },
        el("td", { text: when(ev.time_ms) }), el("td", { text: ev.principal }), el("td", { text: ev.action }),
        el("td", { class: "outcome", text: ev.outcome }), el("td", { text: ev.reason || (ev.detail ? JSON.stringify(ev.detail) : "") }));
    });
    const table = el("table", {}, el("caption", { text: p.name + " vault (newest first)" }),
      el("thead", {}, el("tr", {}, ...["Time", "Principal", "Action", "Outcome", "Reason / detail"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, ...rows));
    boxes.push(el("div", { class: "audit", "data-party": p.id }, table));
  }
  audits.replaceChildren(...boxes);
}

refresh();
setInterval(refresh, 3000);
