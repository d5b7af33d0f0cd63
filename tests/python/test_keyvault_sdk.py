"""Azure's own Key Vault SDK (azure-keyvault-keys) against a Conclave vault: create an exportable
key with a release policy, get it, and release it to a TEE with a token from the Conclave
attestation service; the test then checks the release JWS and unwraps key_hsm with the TEE key,
using only the `cryptography` package."""

import base64
import json
import subprocess
import time

import jwt
import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient, KeyReleasePolicy
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

from conftest import conclave, free_port, wait_http


def key_client(d, token):
    # The SDK accepts a challenge only from a parent domain of the vault's host (as for
    # *.vault.azure.net); a vault on an IP address needs the documented opt-out.
    return KeyClient(d["vault"], StaticToken(token), connection_verify=d["ca"], verify_challenge_resource=False)


class StaticToken:
    """A credential holding a vault bearer token (the vault's principals are its own)."""

    def __init__(self, token):
        self.token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 3600)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def deployment(tmp_path):
    """Attestation service and vault over TLS from one local CA, and a sim platform."""
    ca_dir = tmp_path / "ca"
    ark = conclave("sim-host", "root", "--state-dir", str(tmp_path / "sim")).strip()
    attest_port, vault_port = free_port(), free_port()
    attest_url = f"https://127.0.0.1:{attest_port}"
    vault_url = f"https://127.0.0.1:{vault_port}"
    procs = []

    def start(name, *args):
        log = open(tmp_path / f"{name}.log", "wb")
        procs.append(subprocess.Popen([conclave.path, *args], stdout=log, stderr=subprocess.STDOUT))

    start("attest", "attest", "serve", "--listen", f"127.0.0.1:{attest_port}", "--state-dir", str(tmp_path / "attest"),
          "--sim-root", ark, "--ca-dir", str(ca_dir))
    ca = str(ca_dir / "ca.pem")
    for _ in range(100):
        if (ca_dir / "ca.pem").exists():
            break
        time.sleep(0.1)
    wait_http_tls(f"{attest_url}/healthz", ca)
    start("vault", "kms", "serve", "--listen", f"127.0.0.1:{vault_port}", "--state-dir", str(tmp_path / "vault"),
          "--ca-dir", str(ca_dir), "--attestation-authority", attest_url)
    wait_http_tls(f"{vault_url}/healthz", ca)
    admin = (tmp_path / "vault" / "admin.token").read_text()
    try:
        yield {"tmp": tmp_path, "ca": ca, "attest": attest_url, "vault": vault_url, "admin": admin}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            assert p.wait(timeout=10) == 0, "services exit cleanly on SIGTERM"


def wait_http_tls(url, ca, timeout=30):
    deadline = time.time() + timeout
    while True:
        try:
            if requests.get(url, verify=ca, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            if time.time() > deadline:
                raise
        time.sleep(0.1)


def tee_token(d, private_key, nonce=None):
    """Evidence from a workload launched by the sim host that binds our TEE key, exchanged for a
    token by posting the MAA-shaped request from Python."""
    numbers = private_key.public_key().public_numbers()
    jwk = {"kid": "TeeEncryptionKey", "kty": "RSA", "key_ops": ["encrypt"],
           "n": b64url(numbers.n.to_bytes(256, "big")), "e": b64url(numbers.e.to_bytes(3, "big"))}
    runtime = d["tmp"] / "runtime.json"
    runtime.write_text(json.dumps({"keys": [jwk]}))
    request_file = d["tmp"] / "attest-request.json"
    config = d["tmp"] / "launch.toml"
    config.write_text('party = "python-sdk-client"\n')
    args = ["tee", "evidence", "--runtime-data", str(runtime), "--out", str(request_file)]
    if nonce:
        args += ["--nonce", nonce]
    conclave("sim-host", "launch", "--state-dir", str(d["tmp"] / "sim"), "--config", str(config), "--", conclave.path, *args)
    measured = json.loads(conclave("measure", conclave.path, str(config), "--json", "--", *args))
    body = json.loads(request_file.read_text())
    resp = requests.post(f"{d['attest']}/attest/SevSnpVm?api-version=2022-08-01", json=body, verify=d["ca"], timeout=10)
    resp.raise_for_status()
    return resp.json()["token"], measured["launchmeasurement"]


def policy_for(d, measurement):
    return {"version": "1.0.0", "anyOf": [{"authority": d["attest"], "allOf": [
        {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
        {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": False},
        {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": measurement},
    ]}]}


def principal(d, name):
    return conclave("kms", "principal", "--vault", d["vault"], "--token", d["admin"], "--ca", d["ca"], name).strip()


def test_azure_sdk_creates_gets_and_releases_a_key(deployment):
    d = deployment
    client = key_client(d, principal(d, "contoso"))
    tee_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token, measurement = tee_token(d, tee_key, nonce="sdk-nonce")

    policy = KeyReleasePolicy(json.dumps(policy_for(d, measurement)).encode())
    created = client.create_rsa_key("sdk-key", size=2048, exportable=True, release_policy=policy, hardware_protected=True)
    assert created.properties.exportable is True
    assert created.id.startswith(f"{d['vault']}/keys/sdk-key/")
    assert created.key.kty == "RSA-HSM"

    fetched = client.get_key("sdk-key")
    assert fetched.id == created.id
    assert json.loads(fetched.properties.release_policy.encoded_policy)["anyOf"][0]["authority"] == d["attest"]

    result = client.release_key("sdk-key", token, nonce="sdk-nonce")
    jws = result.value

    # The JWS is RS256 by a certificate issued by the local CA; verify it like any client would.
    header = jwt.get_unverified_header(jws)
    leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    ca_cert = x509.load_pem_x509_certificate(open(d["ca"], "rb").read())
    leaf.verify_directly_issued_by(ca_cert)
    payload = jwt.decode(jws, leaf.public_key(), algorithms=["RS256"], options={"verify_exp": False})
    assert payload["request"]["kid"] == created.id
    released = payload["response"]["key"]["key"]
    assert released["kid"] == created.id

    # key_hsm: RSA-OAEP(SHA-1) wraps an AES-256 key, AES-KWP wraps the PKCS#8 private key.
    blob = json.loads(b64url_decode(released["key_hsm"]))
    assert blob["header"]["enc"] == "CKM_RSA_AES_KEY_WRAP"
    wrapped = b64url_decode(blob["ciphertext"])
    aes_key = tee_key.decrypt(wrapped[:256], padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
    pkcs8 = aes_key_unwrap_with_padding(aes_key, wrapped[256:])
    private = serialization.load_der_private_key(pkcs8, password=None)
    assert private.public_key().public_numbers().n == int.from_bytes(created.key.n, "big")

    # The released key decrypts what the public key from the SDK encrypts.
    public = rsa.RSAPublicNumbers(int.from_bytes(created.key.e, "big"), int.from_bytes(created.key.n, "big")).public_key()
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    assert private.decrypt(public.encrypt(b"fabrikam data key", oaep), oaep) == b"fabrikam data key"


def test_azure_sdk_sees_denials_with_reasons(deployment):
    d = deployment
    contoso = key_client(d, principal(d, "contoso"))
    woodgrove = key_client(d, principal(d, "woodgrove"))
    tee_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token, measurement = tee_token(d, tee_key)
    contoso.create_rsa_key("contoso-key", size=2048, exportable=True,
                           release_policy=KeyReleasePolicy(json.dumps(policy_for(d, "00" * 48)).encode()))

    # The owner's policy pins another measurement.
    with pytest.raises(HttpResponseError) as denied:
        contoso.release_key("contoso-key", token)
    assert denied.value.status_code == 403
    assert "x-ms-sevsnpvm-launchmeasurement" in denied.value.message

    # Another party has no grant.
    with pytest.raises(HttpResponseError) as denied:
        woodgrove.release_key("contoso-key", token)
    assert denied.value.status_code == 403
    assert "no release grant" in denied.value.message

    # A wrong bearer token is answered with the challenge, and the SDK reports the 401.
    stranger = key_client(d, "cvt_not-a-token")
    with pytest.raises(HttpResponseError) as denied:
        stranger.get_key("contoso-key")
    assert denied.value.status_code == 401


def test_azure_sdk_backs_up_and_restores_a_key_within_one_security_domain(deployment):
    """backup_key / restore_key_backup as Azure's SDK sends them: the backup restores into a
    second vault holding the same master key (the same security domain), which then releases
    the same private key to an attested TEE; not into the vault where the key exists (409), nor
    into a vault of another domain."""
    from azure.core.exceptions import ResourceExistsError

    d = deployment
    client = key_client(d, principal(d, "contoso"))
    tee_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attested, measurement = tee_token(d, tee_key)
    policy = KeyReleasePolicy(json.dumps(policy_for(d, measurement)).encode())
    created = client.create_rsa_key("backed-up", size=2048, exportable=True, release_policy=policy)
    backup = client.backup_key("backed-up")
    assert isinstance(backup, bytes) and b"backed-up" not in backup  # sealed, not readable
    with pytest.raises(ResourceExistsError):
        client.restore_key_backup(backup)

    procs = []
    try:
        for name, same_domain in [("vault-b", True), ("vault-c", False)]:
            port = free_port()
            url = f"https://127.0.0.1:{port}"
            args = ["kms", "serve", "--listen", f"127.0.0.1:{port}", "--state-dir", str(d["tmp"] / name),
                    "--ca-dir", str(d["tmp"] / "ca"), "--attestation-authority", d["attest"]]
            if same_domain:
                args += ["--master-key-file", str(d["tmp"] / "vault" / "master.key")]
            log = open(d["tmp"] / f"{name}.log", "wb")
            procs.append(subprocess.Popen([conclave.path, *args], stdout=log, stderr=subprocess.STDOUT))
            wait_http_tls(f"{url}/healthz", d["ca"])
            admin = (d["tmp"] / name / "admin.token").read_text()
            token = conclave("kms", "principal", "--vault", url, "--token", admin, "--ca", d["ca"], "contoso").strip()
            other = KeyClient(url, StaticToken(token), connection_verify=d["ca"], verify_challenge_resource=False)
            if same_domain:
                restored = other.restore_key_backup(backup)
                assert restored.name == "backed-up"
                assert restored.properties.version == created.properties.version
                assert restored.key.n == created.key.n
                # And it releases, to the same policy, the very private key that was backed up.
                payload = jwt.decode(other.release_key("backed-up", attested).value, options={"verify_signature": False})
                blob = json.loads(b64url_decode(payload["response"]["key"]["key"]["key_hsm"]))
                wrapped = b64url_decode(blob["ciphertext"])
                aes_key = tee_key.decrypt(wrapped[:256], padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
                private = serialization.load_der_private_key(aes_key_unwrap_with_padding(aes_key, wrapped[256:]), password=None)
                assert private.public_key().public_numbers().n == int.from_bytes(created.key.n, "big")
            else:
                with pytest.raises(HttpResponseError) as refused:
                    other.restore_key_backup(backup)
                assert "another security domain" in str(refused.value)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


def test_azure_sdk_soft_deletes_recovers_and_purges_a_key(deployment):
    """Azure's deleted-keys API as the SDK drives it: begin_delete_key (then polls
    /deletedkeys), list and get deleted keys, the name stays taken, begin_recover_deleted_key
    (polls /keys), purge_deleted_key."""
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

    d = deployment
    client = key_client(d, principal(d, "contoso"))
    created = client.create_rsa_key("soft-deleted", size=2048)
    deleted = client.begin_delete_key("soft-deleted").result()
    assert deleted.recovery_id == f"{d['vault']}/deletedkeys/soft-deleted"
    assert (deleted.scheduled_purge_date - deleted.deleted_date).days == 90
    assert deleted.properties.recovery_level == "Recoverable+Purgeable"
    with pytest.raises(ResourceNotFoundError):
        client.get_key("soft-deleted")
    assert [k.name for k in client.list_deleted_keys()] == ["soft-deleted"]
    assert client.get_deleted_key("soft-deleted").key.n == created.key.n
    with pytest.raises(ResourceExistsError):
        client.create_rsa_key("soft-deleted", size=2048)

    recovered = client.begin_recover_deleted_key("soft-deleted").result()
    assert recovered.id == created.id
    assert client.get_key("soft-deleted").key.n == created.key.n

    client.begin_delete_key("soft-deleted").result()
    client.purge_deleted_key("soft-deleted")
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_key("soft-deleted")
    client.create_rsa_key("soft-deleted", size=2048)  # the name is free again


def test_azure_sdk_rotates_a_key_and_sets_its_rotation_policy(deployment):
    """rotate_key and the rotation policy as Azure's SDK sends them; a Notify action, which
    Conclave cannot carry out, is refused with the reason."""
    from azure.keyvault.keys import KeyRotationLifetimeAction, KeyRotationPolicy, KeyRotationPolicyAction

    d = deployment
    client = key_client(d, principal(d, "contoso"))
    first = client.create_rsa_key("rotated", size=2048)
    second = client.rotate_key("rotated")
    assert second.properties.version != first.properties.version
    assert second.key.n != first.key.n
    assert len(list(client.list_properties_of_key_versions("rotated"))) == 2

    actions = [KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P90D")]
    policy = client.update_key_rotation_policy("rotated", KeyRotationPolicy(), lifetime_actions=actions, expires_in="P2Y")
    assert policy.expires_in == "P2Y"
    got = client.get_key_rotation_policy("rotated")
    assert [(a.action, a.time_after_create) for a in got.lifetime_actions] == [(KeyRotationPolicyAction.rotate, "P90D")]

    notify = [KeyRotationLifetimeAction(KeyRotationPolicyAction.notify, time_before_expiry="P30D")]
    with pytest.raises(HttpResponseError) as refused:
        client.update_key_rotation_policy("rotated", KeyRotationPolicy(), lifetime_actions=notify)
    assert "Notify" in str(refused.value)


def rfc9162_root_from_inclusion(index, size, leaf_hash, proof):
    """RFC 9162 §2.1.3.2, written from the RFC: the root an inclusion proof leads to."""
    import hashlib
    if index >= size:
        raise ValueError("index beyond the tree")
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise ValueError("proof too long")
        if fn % 2 == 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("proof too short")
    return r


def test_audit_checkpoints_verify_with_python_alone(deployment):
    """The vault's signed audit checkpoint and inclusion proofs check with an implementation
    written here from the specifications (C2SP signed-note and tlog-checkpoint, RFC 9162) and
    Python's `cryptography` for Ed25519 — nothing of Conclave's."""
    import hashlib
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    d = deployment
    token = principal(d, "contoso")
    client = key_client(d, token)
    client.create_rsa_key("audited", size=2048)
    client.rotate_key("audited")
    headers = {"Authorization": f"Bearer {token}"}
    vkey = requests.get(f"{d['vault']}/audit/key", headers=headers, verify=d["ca"], timeout=10).json()["verifier_key"]
    note = requests.get(f"{d['vault']}/audit/checkpoint", headers=headers, verify=d["ca"], timeout=10).text
    bundle = requests.get(f"{d['vault']}/audit/proofs", headers=headers, verify=d["ca"], timeout=10).json()

    # The verifier key: <name>+<hex key hash>+<base64(0x01 ‖ Ed25519 public key)>.
    name, key_hash, typed = vkey.split("+", 2)
    typed = base64.b64decode(typed)
    assert typed[0] == 1 and len(typed) == 33
    assert hashlib.sha256(name.encode() + b"\n" + typed).digest()[:4].hex() == key_hash
    public = Ed25519PublicKey.from_public_bytes(typed[1:])

    def open_note(text):
        body, sigs = text[:text.rindex("\n\n") + 1], text[text.rindex("\n\n") + 2:]
        for line in sigs.splitlines():
            dash, signer, blob = line.split(" ")
            blob = base64.b64decode(blob)
            if dash == "\u2014" and signer == name and blob[:4].hex() == key_hash:
                public.verify(blob[4:], body.encode())  # raises if forged
                return body
        raise AssertionError("no signature by the vault's key")

    for checkpoint in [note, bundle["checkpoint"]]:
        origin, size, root = open_note(checkpoint).splitlines()[:3]
        assert origin == name
    size, root = int(size), base64.b64decode(root)
    assert bundle["entries"], bundle
    for e in bundle["entries"]:
        leaf = base64.b64decode(e["leaf"])
        entry = json.loads(leaf)
        assert entry["seq"] == e["seq"]
        assert entry["principal"] == "contoso" or entry.get("key") == "audited"
        proof = [base64.b64decode(p) for p in e["proof"]]
        assert rfc9162_root_from_inclusion(e["seq"], size, hashlib.sha256(b"\x00" + leaf).digest(), proof) == root
        # A changed leaf leads elsewhere.
        assert rfc9162_root_from_inclusion(e["seq"], size, hashlib.sha256(b"\x00" + leaf + b" ").digest(), proof) != root
    assert {json.loads(base64.b64decode(e["leaf"]))["action"] for e in bundle["entries"]} >= {"create", "rotate"}
    with pytest.raises(Exception):
        open_note(note.replace("\n" + str(size) + "\n", "\n" + str(size + 1) + "\n"))
