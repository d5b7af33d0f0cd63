// Browser test: starts `conclave demo` on free ports and drives its pages in Debian's Chromium
// (playwright-core; no downloaded browser). Screenshots go to test-artifacts/screenshots/.
//
//   CONCLAVE_BIN=target/debug/conclave node tests/browser/demo.mjs
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const bin = process.env.CONCLAVE_BIN || "target/debug/conclave";
const shots = path.resolve(process.env.SCREENSHOT_DIR || "test-artifacts/screenshots");
mkdirSync(shots, { recursive: true });

let failures = 0;
function check(cond, what) {
  if (cond) {
    console.log("  ok   " + what);
  } else {
    failures++;
    console.log("  FAIL " + what);
  }
}

function portFree(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

async function freeBase() {
  for (let i = 0; i < 200; i++) {
    const base = 30000 + Math.floor(Math.random() * 2500) * 10;
    let ok = true;
    for (let p = base; p < base + 10 && ok; p++) ok = await portFree(p);
    if (ok) return base;
  }
  throw new Error("no ten consecutive free ports");
}

function startDemo(stateDir, port) {
  const child = spawn(bin, ["demo", "--records", "400", "--port", String(port), "--state-dir", stateDir], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error("demo not ready after 300 s:\n" + out)), 300_000);
    child.stdout.on("data", (d) => {
      out += d;
      if (out.includes("Conclave demo ready") && out.includes("Ctrl-C")) {
        clearTimeout(timer);
        resolve({ child, out });
      }
    });
    child.on("exit", (code) => reject(new Error("demo exited with " + code + ":\n" + out)));
  });
}

const state = mkdtempSync(path.join(os.tmpdir(), "conclave-browser-"));
const port = await freeBase();
const { child, out } = await startDemo(path.join(state, "state"), port);
// The portal is plain HTTP on loopback; workloads serve HTTPS with keys made in their TEEs.
const url = (offset) => (offset === 0 ? "http" : "https") + "://127.0.0.1:" + (port + offset) + "/";
// Chromium trusts exactly the workloads' TLS keys, by the RFC 7469 pins the demo checked against
// their attestation (demo.json), and no other certificate error.
const demo = JSON.parse(readFileSync(path.join(state, "state", "demo.json"), "utf8"));
const pins = demo.workloads.map((w) => w.pin_sha256).filter(Boolean);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--ignore-certificate-errors-spki-list=" + pins.join(",")],
});

try {
  check(out.includes("SIMULATED SEV-SNP"), "the demo's summary says the TEE is simulated");
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("pageerror", (e) => { failures++; console.log("  FAIL page error: " + e.message); });

  // Each party page: attestation, the SIMULATED badge, the claims table, its own records.
  for (const [name, offset] of [["Contoso", 5], ["Fabrikam Fashion", 6], ["Woodgrove Bank", 7]]) {
    console.log(name);
    await page.goto(url(offset));
    await page.waitForSelector("#attestation-status[data-state='attested']", { timeout: 30_000 });
    check((await page.textContent("#party-name")) === name, "page shows the party's name");
    check((await page.textContent("#tee-badge")).includes("SIMULATED TEE"), "SIMULATED TEE badge is visible");
    check(await page.isVisible("#tee-badge"), "the badge is on screen");
    await page.click("#claims-box summary");
    const claims = await page.locator("#claims tbody tr").count();
    check(claims > 10, "claims table lists the token's claims (" + claims + ")");
    const explained = await page.locator("#claims tbody tr", { hasText: "x-ms-sevsnpvm-launchmeasurement" }).textContent();
    check(explained.includes("Key owners pin this value"), "the measurement claim is explained in plain words");
    await page.waitForSelector("#records tbody tr", { timeout: 30_000 });
    check((await page.locator("#records tbody tr").count()) === 25, "first page of own records shown");
    check((await page.textContent("#records-status")).includes("400 records"), "record count shown");
    await page.fill("#search", "germany");
    await page.press("#search", "Enter");
    await page.waitForFunction(() => document.querySelector("#records-status").textContent.includes("match"));
    const rows = await page.locator("#records tbody tr").allTextContents();
    check(rows.length > 0 && rows.every((r) => r.toLowerCase().includes("germany")), "search filters own records");
    await page.screenshot({ path: path.join(shots, name.split(" ")[0].toLowerCase() + ".png"), fullPage: true });
  }

  // A denied cross-company release, with the vault's reason.
  console.log("Cross-company release");
  await page.goto(url(5));
  await page.waitForSelector("#keys-table tr[data-company='fabrikam'] button");
  await page.click("#keys-table tr[data-company='fabrikam'] button");
  await page.waitForSelector("#keys-table tr[data-company='fabrikam'] td.release[data-state='denied']");
  const reason = await page.textContent("#keys-table tr[data-company='fabrikam'] td.release");
  check(reason.includes("Denied by the vault") && reason.includes("no release grant"), "Contoso is refused Fabrikam's key: " + reason);
  await page.screenshot({ path: path.join(shots, "contoso-denied.png"), fullPage: true });

  // The snooper: no TEE, every release refused, no records.
  console.log("Snooper");
  await page.goto(url(8));
  await page.waitForSelector("#tee-badge[data-kind='none']");
  check((await page.textContent("#tee-badge")).includes("NO TEE"), "snooper shows NO TEE");
  await page.waitForSelector("#keys-table tr[data-company='woodgrove'] td.release[data-state='denied']", { timeout: 30_000 });
  const snoop = await page.textContent("#keys-table tr[data-company='woodgrove'] td.release");
  check(snoop.includes("attestation token rejected"), "snooper's release refused by the vault: " + snoop);
  await page.waitForFunction(() => document.querySelector("#records-status").textContent.startsWith("No records shown"));
  check((await page.locator("#records tbody tr").count()) === 0, "snooper shows no records");
  await page.screenshot({ path: path.join(shots, "snooper.png"), fullPage: true });

  // The tampered workload: attested, but its measurement matches no policy.
  console.log("Tampered workload");
  await page.goto(url(9));
  await page.waitForSelector("#keys-table tr[data-company='woodgrove'] td.release[data-state='denied']", { timeout: 30_000 });
  const tampered = await page.textContent("#keys-table tr[data-company='woodgrove'] td.release");
  check(tampered.includes("x-ms-sevsnpvm-launchmeasurement"), "tampered workload refused on its measurement");
  await page.screenshot({ path: path.join(shots, "tampered.png"), fullPage: true });

  // Woodgrove's analysis: progress to 100 %, tables, charts, the map.
  console.log("Woodgrove analysis");
  await page.goto(url(7));
  await page.waitForSelector("#attestation-status[data-state='attested']");
  check(await page.isVisible("#analytics"), "analytics section shown to Woodgrove");
  await page.click("#run-analysis");
  await page.waitForSelector("#analysis-status[data-state='done']", { timeout: 120_000 });
  const bars = await page.locator("#progress [role='progressbar']").evaluateAll((els) => els.map((e) => e.getAttribute("aria-valuenow")));
  check(bars.length === 3 && bars.every((v) => v === "100"), "three progress bars at 100% (" + bars.join(", ") + ")");
  await page.waitForSelector("#map path.has-data");
  const coloured = await page.locator("#map path.has-data").count();
  check(coloured >= 20, "map colours " + coloured + " countries");
  const fills = await page.locator("#map path.has-data").evaluateAll((els) => new Set(els.map((e) => getComputedStyle(e).fill)).size);
  check(fills >= 3, "map uses " + fills + " distinct colours");
  check((await page.locator("#top-countries tbody tr").count()) === 10, "top 10 countries table");
  check((await page.locator("#generations .company-chart").count()) === 3, "generation chart per company");
  check((await page.textContent("#suppression-note")).includes("k = 5"), "suppression rule stated");
  check(await page.isVisible("#receipt-link"), "receipt download offered");
  await page.screenshot({ path: path.join(shots, "woodgrove-analysis.png"), fullPage: true });

  // Keyboard: the run button is reachable by Tab and has an accessible name.
  const labelled = await page.locator("button:visible").evaluateAll((els) => els.every((e) => e.textContent.trim().length > 0));
  check(labelled, "every visible button has a text label");

  // The portal: parties side by side and each vault's audit log.
  console.log("Portal");
  await page.goto(url(0));
  await page.waitForSelector("#workloads tbody tr");
  check((await page.locator("#workloads tbody tr").count()) === 5, "portal lists five workloads");
  check((await page.locator("#frames iframe").count()) === 3, "three party pages side by side");
  await page.waitForSelector(".audit[data-party='fabrikam'] tr[data-outcome='denied']", { timeout: 30_000 });
  check(true, "Fabrikam's audit log shows the denied release");
  await page.screenshot({ path: path.join(shots, "portal.png"), fullPage: true });
} catch (e) {
  failures++;
  console.log("  FAIL " + (e.stack || e));
} finally {
  await browser.close();
  child.kill("SIGINT");
  await new Promise((r) => child.once("exit", r));
  rmSync(state, { recursive: true, force: true });
}

console.log(failures ? failures + " browser check(s) failed" : "all browser checks passed; screenshots in " + shots);
process.exit(failures ? 1 : 0);
