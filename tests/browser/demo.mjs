// Browser test: starts `conclave demo` on free ports and drives its pages in Debian's Chromium
// (playwright-core; no downloaded browser). Screenshots go to test-artifacts/screenshots/.
//
//   CONCLAVE_BIN=target/debug/conclave node tests/browser/demo.mjs
import { spawn } from "node:child_process";
import crypto from "node:crypto";
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
    // Below Linux's ephemeral port range (32768–60999): an outgoing connection never takes one of
    // these ports between this check and the workloads binding them.
    const base = 20000 + Math.floor(Math.random() * 1100) * 11;
    let ok = true;
    for (let p = base; p < base + 11 && ok; p++) ok = await portFree(p);
    if (ok) return base;
  }
  throw new Error("no eleven consecutive free ports");
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
// The identity provider's certificate comes from the demo's local CA, which this browser does not
// know either: trust its key by pin too.
const idpCert = new crypto.X509Certificate(readFileSync(path.join(state, "state", "idp", "tls", "idp.pem")));
pins.push(crypto.createHash("sha256").update(idpCert.publicKey.export({ type: "spki", format: "der" })).digest("base64"));
const password = (username) => demo.sign_in.find((u) => u.username === username).password;

// Opens a workload page; when it sends the browser to the party's identity provider, signs in.
async function signIn(page, pageUrl, username, shot) {
  await page.goto(pageUrl);
  await page.waitForSelector("#username, #party-name", { timeout: 30_000 });
  if (!(await page.locator("#username").count())) return;
  if (shot) await page.screenshot({ path: path.join(shots, shot) });
  await page.fill("#username", username);
  await page.fill("#password", password(username));
  await Promise.all([page.waitForURL(pageUrl + "**"), page.click("button[type=submit]")]);
  await page.waitForFunction(() => document.querySelector("#user-name").textContent.includes("Signed in"));
}
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
  // Without sign-in, the page sends the browser to the party's identity provider; a wrong
  // password is refused there.
  console.log("Sign-in");
  await page.goto(url(5));
  await page.waitForSelector("#username");
  check(page.url().startsWith(demo.identity_provider + "/contoso/authorize"), "Contoso's page sends the browser to Contoso's identity provider");
  check(page.url().includes("code_challenge_method=S256"), "the sign-in uses PKCE");
  await page.fill("#username", "contoso-member");
  await page.fill("#password", "not-the-password");
  await page.click("button[type=submit]");
  await page.waitForSelector("p.err");
  check((await page.textContent("p.err")).includes("Wrong username or password"), "a wrong password is refused");
  await page.screenshot({ path: path.join(shots, "sign-in-refused.png") });

  for (const [name, offset, user] of [["Contoso", 5, "contoso-member"], ["Fabrikam Fashion", 6, "fabrikam-member"], ["Woodgrove Bank", 7, "woodgrove-member"]]) {
    console.log(name);
    await signIn(page, url(offset), user, user + "-sign-in.png");
    check((await page.textContent("#user-name")).includes(user + " (member)"), "signed in as " + user);
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
  await signIn(page, url(8), "woodgrove-member");
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
  await signIn(page, url(9), "woodgrove-member");
  await page.waitForSelector("#keys-table tr[data-company='woodgrove'] td.release[data-state='denied']", { timeout: 30_000 });
  const tampered = await page.textContent("#keys-table tr[data-company='woodgrove'] td.release");
  check(tampered.includes("x-ms-sevsnpvm-launchmeasurement"), "tampered workload refused on its measurement");
  await page.screenshot({ path: path.join(shots, "tampered.png"), fullPage: true });

  // Woodgrove's analysis contracts: who approved each, a run with its result (tables, charts,
  // the map) sealed to its receivers, and the contract Contoso did not approve, refused at
  // Contoso's vault with the reason on the page.
  console.log("Woodgrove analysis contracts");
  await page.goto(url(7));
  await page.waitForSelector("#attestation-status[data-state='attested']");
  check(await page.isHidden("#contracts"), "a member is not shown the analysis contracts");
  check(await page.isHidden("#analytics"), "the built-in analysis is off in the demo");
  // Sign out, and back in as Woodgrove's analyst.
  await page.click("#sign-out");
  await page.waitForSelector("#username");
  await page.fill("#username", "woodgrove-analyst");
  await page.fill("#password", password("woodgrove-analyst"));
  await Promise.all([page.waitForURL(url(7) + "**"), page.click("button[type=submit]")]);
  await page.waitForFunction(() => document.querySelector("#user-name").textContent.includes("woodgrove-analyst"));
  await page.waitForSelector("#attestation-status[data-state='attested']");
  await page.waitForFunction(() => document.querySelector("#records-status").textContent.startsWith("No records shown"), null, { timeout: 30_000 });
  const analystRecords = await page.textContent("#records-status");
  check(analystRecords.includes("needs the member role") && (await page.locator("#records tbody tr").count()) === 0,
    "the analyst is shown no records: " + analystRecords);
  await page.waitForSelector("#contracts-table tbody tr[data-contract]");
  check((await page.locator("#contracts-table tbody tr[data-contract]").count()) === 3, "three contracts listed");
  const salariesRow = "#contracts-table tr[data-contract='contoso-salaries']";
  check((await page.textContent(salariesRow + " .approval[data-status='not-approved']")).includes("Contoso has not approved"),
    "the page says Contoso has not approved its salaries contract");
  check((await page.locator("#contracts-table tr[data-contract='partner-demographics'] .approval[data-status='approved']").count()) === 3,
    "the demographics contract is approved by all three parties");
  await page.click("#contracts-table button[data-contract='partner-demographics']");
  await page.waitForSelector("#contract-status[data-state='done']", { timeout: 120_000 });
  const queries = await page.locator("#contract-results .contract-query").count();
  check(queries >= 8, queries + " query results shown");
  await page.waitForSelector("#contract-results svg.map path.has-data");
  const coloured = await page.locator("#contract-results .contract-query[data-query='salary_by_country'] svg.map path.has-data").count();
  check(coloured >= 20, "map colours " + coloured + " countries");
  const fills = await page.locator("#contract-results svg.map path.has-data").evaluateAll((els) => new Set(els.map((e) => getComputedStyle(e).fill)).size);
  check(fills >= 3, "map uses " + fills + " distinct colours");
  check((await page.locator("#contract-results .chart").count()) >= 3, "bar charts drawn");
  check(await page.isVisible("#contract-receipt-download"), "receipt and sealed results offered for download");
  check((await page.textContent("#contract-sealed-to")).includes("woodgrove"), "sealed to the receivers, Woodgrove among them");
  check((await page.locator("#contract-inputs tbody tr").count()) === 3, "the three inputs named with their ciphertext hashes");
  await page.screenshot({ path: path.join(shots, "woodgrove-contract.png"), fullPage: true });
  await page.click("#contracts-table button[data-contract='contoso-salaries']");
  await page.waitForSelector("#contract-status[data-state='failed']", { timeout: 60_000 });
  const refusal = await page.textContent("#contract-status");
  check(refusal.includes("Contoso's vault refused") && refusal.includes("x-ms-runtime.contract.digest"),
    "the refusal and its reason are shown: " + refusal);
  check((await page.locator("#contract-releases tr[data-table='contoso'] td.release[data-state='denied']").count()) === 1,
    "Contoso's key shown as denied");
  check(await page.isHidden("#contract-receipt"), "no receipt for a refused run");
  await page.screenshot({ path: path.join(shots, "woodgrove-contract-refused.png"), fullPage: true });

  // Keyboard: the run button is reachable by Tab and has an accessible name.
  const labelled = await page.locator("button:visible").evaluateAll((els) => els.every((e) => e.textContent.trim().length > 0));
  check(labelled, "every visible button has a text label");

  // The portal: parties side by side and each vault's audit log.
  console.log("Portal");
  await page.goto(url(0));
  await page.waitForSelector("#workloads tbody tr");
  check((await page.locator("#workloads tbody tr").count()) === 5, "portal lists five workloads");
  check((await page.locator("#frames .party-card").count()) === 3, "a card for each party's page");
  check(!(await page.content()).includes(password("contoso-member")), "the portal shows no password");
  await page.waitForSelector(".audit[data-party='fabrikam'] tr[data-outcome='denied']", { timeout: 30_000 });
  check(true, "Fabrikam's audit log shows the denied release");
  const contosoAudit = await page.textContent(".audit[data-party='contoso']");
  check(contosoAudit.includes("x-ms-runtime.contract.digest"), "Contoso's audit log shows the refused contract with its reason");
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
