"""The confidential VM's guest recipe run for real, as far as this machine allows.

deploy/cvm/cloud-init.yaml is rendered as the ARM template renders it (its ${…} placeholders
replaced), and its files are laid out under a scratch root. Then:

- the systemd unit is checked by systemd itself (`systemd-analyze verify`), against the binary
  and script it names;
- the unit's ExecStartPre (`fetch-tokens`) runs in a network namespace of its own, where
  169.254.169.254 is the address it calls: a stand-in there answers the Azure Instance Metadata
  Service's managed-identity token request, and one on loopback answers Key Vault's Get Secret
  (api-version 7.4), each with the documented response shape and each checking what it is sent;
- the unit's ExecStart runs with the config the template carries, and stops where the machine
  differs from a confidential VM: it has no vTPM.

systemd is not PID 1 here, so the unit is not started by systemd; its commands are run as it
would run them (RUNTIME_DIRECTORY set).
"""

import base64
import http.server
import json
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest
import yaml

from conftest import ROOT

CLOUD_INIT = ROOT / "deploy" / "cvm" / "cloud-init.yaml"
BIN = os.environ.get("CONCLAVE_BIN", str(ROOT / "target" / "debug" / "conclave"))


def render(values):
    """The template's customData: replace() of each placeholder, as conclave-cvm.json does."""
    text = CLOUD_INIT.read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    # Every ${name} is one the template fills (the script's own ${VAR:?} are shell's).
    left = re.findall(r"\$\{[A-Za-z0-9]+\}", text)
    assert not left, f"placeholders the test does not fill: {left}"
    return yaml.safe_load(text)


def lay_out(doc, root, rewrite):
    """Writes cloud-init's write_files under root (paths and contents passed through rewrite)."""
    for f in doc["write_files"]:
        path = root / f["path"].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        content = base64.b64decode(f["content"]) if f.get("encoding") == "b64" else f["content"].encode()
        path.write_bytes(rewrite(content.decode()).encode())
        path.chmod(int(f["permissions"], 8))
    return root


PARTY_TOML = textwrap.dedent("""\
    party = "woodgrove"
    display_name = "Woodgrove Bank"
    listen = "0.0.0.0:8443"
    attestation_url = "https://attest.example"
    ca_file = "/etc/conclave/ca.crt"
    analysis = true

    [[datasets]]
    company = "contoso"
    display_name = "Contoso"
    url = "az://contoso/records.parquet"
    key = "https://contoso-vault.example:8443/keys/contoso-data"
    token_file = "/run/conclave/tokens/contoso"

    [[datasets]]
    company = "woodgrove"
    display_name = "Woodgrove Bank"
    url = "az://woodgrove/records.parquet"
    key = "https://woodgrove-vault.example:8443/keys/woodgrove-data"
    token_file = "/run/conclave/tokens/woodgrove"
""")


@pytest.fixture
def guest(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    import datetime
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    root = tmp_path / "root"
    return {"root": root, "rewrite": lambda text: rewrite_under(root, text), "values": {
        "partyConfigBase64": base64.b64encode(PARTY_TOML.encode()).decode(),
        "caBundleBase64": base64.b64encode(pem).decode(),
        "tokenParties": "contoso,woodgrove",
        "partyId": "woodgrove",
        "conclaveBinaryUrl": "https://example.invalid/conclave",
        "conclaveBinarySha256": "0" * 64,
    }}


def unit_of(doc):
    return next(f for f in doc["write_files"] if f["path"].endswith("conclave-workload.service"))["content"]


def directive(unit, name):
    return next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(name + "="))


def test_systemd_accepts_the_unit(guest):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (scripts/test installs systemd)")
    doc = render(dict(guest["values"], tokenVaultUrl="https://conclave-tokens.vault.azure.net"))
    root = lay_out(doc, guest["root"], guest["rewrite"])
    (root / "usr/local/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(BIN, root / "usr/local/bin/conclave")
    unit = root / "etc/systemd/system/conclave-workload.service"
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    # Only the unit's own lines count: verify also reports on the host's units it loads.
    own = [line for line in (r.stdout + r.stderr).splitlines() if "conclave-workload.service" in line]
    assert r.returncode == 0 and not own, r.stdout + r.stderr


STAND_INS = textwrap.dedent("""\
    # The Azure endpoints fetch-tokens calls, answering as Azure documents them; every request
    # is logged (JSON lines) for the test to check.
    import http.server, json, sys, threading
    log = open(sys.argv[1], "a")
    TOKEN = "imds-access-token"
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            log.write(json.dumps({"host": self.server.server_address[0], "path": self.path,
                                  "metadata": self.headers.get("Metadata"),
                                  "authorization": self.headers.get("Authorization")}) + "\\n")
            log.flush()
            if self.server.server_address[0] == "169.254.169.254":
                ok = self.path.startswith("/metadata/identity/oauth2/token?") and self.headers.get("Metadata") == "true"
                body = {"access_token": TOKEN, "token_type": "Bearer", "resource": "https://vault.azure.net"}
            else:
                name = self.path.split("?")[0].rsplit("/", 1)[-1]
                ok = (self.headers.get("Authorization") == "Bearer " + TOKEN and "api-version=7.4" in self.path
                      and name in ("woodgrove-contoso-token", "woodgrove-woodgrove-token"))
                body = {"value": "cvt_" + name, "id": "https://tokens.vault.azure.net/secrets/" + name + "/1"}
            self.send_response(200 if ok else 403)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body if ok else {"error": {"code": "Forbidden"}}).encode())
        def log_message(self, *a):
            pass
    imds = http.server.HTTPServer(("169.254.169.254", 80), H)
    kv = http.server.HTTPServer(("127.0.0.1", 0), H)
    print(kv.server_address[1], flush=True)
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    kv.serve_forever()
""")


def in_netns(script, tmp_path):
    """Runs a shell script in new user and network namespaces (only loopback, with the
    metadata service's address on it)."""
    path = tmp_path / "netns.sh"
    path.write_text("set -eu\nip link set lo up\nip addr add 169.254.169.254/32 dev lo\n" + script)
    # Its own PID namespace too: when the script ends (or the test gives up on it), everything
    # it started ends with it.
    return subprocess.run(["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork",
                           "--kill-child", "sh", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_the_units_commands_fetch_the_tokens_and_start_the_workload(guest, tmp_path):
    if subprocess.run(["unshare", "--user", "--map-root-user", "--net", "true"]).returncode != 0:
        pytest.skip("no user/network namespaces on this machine")
    log = tmp_path / "requests.jsonl"
    stand_ins = tmp_path / "stand_ins.py"
    stand_ins.write_text(STAND_INS)
    root = guest["root"]
    runtime = root / "run/conclave"
    # The Key Vault URL is only known once its stand-in listens: render inside the namespace.
    script = textwrap.dedent(f"""\
        {sys.executable} {stand_ins} {log} > {tmp_path}/port 2> {tmp_path}/stand_ins.err &
        stand_ins=$!
        trap 'kill $stand_ins 2>/dev/null || true' EXIT
        while [ ! -s {tmp_path}/port ]; do sleep 0.1; done
        port=$(cat {tmp_path}/port)
        {sys.executable} - "$port" <<'EOF'
        import sys
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        import test_cvm_guest as t, json, pathlib
        values = json.loads({json.dumps(json.dumps(guest["values"]))})
        values["tokenVaultUrl"] = "http://127.0.0.1:" + sys.argv[1]
        root = pathlib.Path({str(root)!r})
        t.lay_out(t.render(values), root, lambda s: t.rewrite_under(root, s))
        EOF
        mkdir -p {runtime}
        chmod 700 {runtime}
        export RUNTIME_DIRECTORY={runtime}
        unit={root}/etc/systemd/system/conclave-workload.service
        pre=$(sed -n 's/^ExecStartPre=//p' "$unit")
        $pre
        mkdir -p {root}/usr/local/bin && ln -s {BIN} {root}/usr/local/bin/conclave
        start=$(sed -n 's/^ExecStart=//p' "$unit")
        # The workload serves and keeps retrying attestation; stop it once it has said why
        # attestation failed.
        $start 2> {tmp_path}/workload.log &
        for _ in $(seq 600); do
            grep -q "attestation failed" {tmp_path}/workload.log && break
            sleep 0.1
        done
        kill $! 2>/dev/null || true
        wait $! 2>/dev/null || true
    """)
    r = in_netns(script, tmp_path)
    requests = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    # IMDS first, with the Metadata header and Key Vault as the resource; then one Get Secret per
    # owner, with the managed identity's token.
    assert requests and requests[0]["host"] == "169.254.169.254", (requests, r.stderr)
    assert requests[0]["metadata"] == "true"
    assert "resource=https%3A%2F%2Fvault.azure.net" in requests[0]["path"]
    secrets = sorted(q["path"].split("?")[0] for q in requests[1:])
    assert secrets == ["/secrets/woodgrove-contoso-token", "/secrets/woodgrove-woodgrove-token"], requests
    assert all(q["authorization"] == "Bearer imds-access-token" for q in requests[1:])
    tokens = runtime / "tokens"
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o700
    for owner in ["contoso", "woodgrove"]:
        f = tokens / owner
        assert f.read_text().strip() == f"cvt_woodgrove-{owner}-token"
        assert stat.S_IMODE(f.stat().st_mode) == 0o400
    # The workload read the template's config and CA and listens; its attestation stops at the
    # vTPM, which only a confidential VM has.
    assert r.returncode == 0, r.stderr
    logs = [json.loads(line) for line in (tmp_path / "workload.log").read_text().splitlines() if line.startswith("{")]
    messages = [entry["fields"]["message"] for entry in logs]
    assert "workload listening" in messages, messages
    failed = [m for m in messages if m.startswith("attestation failed")]
    assert failed and "/dev/tpmrm0" in failed[0], messages


def rewrite_under(root, text):
    """The guest's absolute paths, moved under the scratch root."""
    for guest_path in ["/etc/conclave/", "/usr/local/lib/conclave/", "/run/conclave/"]:
        text = text.replace(guest_path, str(root) + guest_path)
    return text.replace("/usr/local/bin/conclave", str(root / "usr/local/bin/conclave"))


def test_the_template_fills_every_placeholder_the_cloud_init_has():
    template = (ROOT / "deploy" / "cvm" / "conclave-cvm.json").read_text()
    filled = set(re.findall(r"'\$\{([A-Za-z0-9]+)\}'", template))
    used = set(re.findall(r"\$\{([A-Za-z0-9]+)\}", CLOUD_INIT.read_text()))
    assert used and used == filled, (used, filled)
