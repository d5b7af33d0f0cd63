"""Encrypted datasets interoperate with PyArrow's Parquet modular encryption (both directions),
and round-trip through Azure Blob Storage (Azurite, the real Azure Storage emulator)."""

import base64
import csv
import datetime
import hashlib
import hmac
import http.client
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from conftest import ROOT, conclave, free_port, wait_http

KID = "https://127.0.0.1:8443/keys/fabrikam-data/00112233445566778899aabbccddeeff"
OAEP256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def b64url_int(i, length):
    return base64.urlsafe_b64encode(i.to_bytes(length, "big")).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def vault_key(tmp_path_factory):
    """An RSA key standing in for a vault key: its public JWK, and its PKCS#8 private key."""
    d = tmp_path_factory.mktemp("key")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = key.public_key().public_numbers()
    (d / "public.json").write_text(json.dumps({"kid": KID, "kty": "RSA-HSM", "n": b64url_int(n.n, 256), "e": b64url_int(n.e, 3)}))
    (d / "private.pk8").write_bytes(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return key, d / "public.json", d / "private.pk8"


def crypto_factory(key):
    class RsaKmsClient(pe.KmsClient):
        """The owner's side: wraps data keys under the vault key's public part, and (for the
        owner's own reading) unwraps with its private part."""

        def __init__(self, config):
            super().__init__()

        def wrap_key(self, key_bytes, master_key_identifier):
            assert master_key_identifier == KID
            return base64.b64encode(key.public_key().encrypt(key_bytes, OAEP256)).decode()

        def unwrap_key(self, wrapped_key, master_key_identifier):
            assert master_key_identifier == KID
            return key.decrypt(base64.b64decode(wrapped_key), OAEP256)

    return pe.CryptoFactory(lambda config: RsaKmsClient(config))


def generated(tmp_path, n=500):
    out = tmp_path / "records.csv"
    conclave("data", "generate", "--party", "fabrikam", "--records", str(n), "--seed", "3", "--out", str(out))
    with open(out, newline="") as f:
        return out, list(csv.DictReader(f))


def as_rows(table):
    rows = table.to_pylist()
    return [{k: str(v) for k, v in r.items()} for r in rows]


def test_pyarrow_reads_a_file_conclave_wrote(tmp_path, vault_key):
    key, public, _ = vault_key
    csv_path, expected = generated(tmp_path)
    out = tmp_path / "enc.parquet"
    conclave("data", "encrypt", "--key", str(public), "-i", str(csv_path), "-o", str(out))

    metadata = json.loads(conclave("data", "inspect", str(out)))
    assert metadata["key_material"]["masterKeyID"] == KID
    assert metadata["key_material"]["keyMaterialType"] == "PKMT1"

    decryption = crypto_factory(key).file_decryption_properties(pe.KmsConnectionConfig())
    table = pq.read_table(out, decryption_properties=decryption)
    assert table.num_rows == len(expected)
    assert as_rows(table) == expected

    with pytest.raises(Exception):
        pq.read_table(out)  # no key, no data


def test_conclave_reads_a_file_pyarrow_wrote(tmp_path, vault_key):
    key, _, private = vault_key
    _, expected = generated(tmp_path, 40)
    table = pa.table({
        "name": [r["name"] for r in expected],
        "phone": [r["phone"] for r in expected],
        "age": pa.array([int(r["age"]) for r in expected], pa.int32()),
        "salary": pa.array([int(r["salary"]) for r in expected], pa.int64()),
        **{c: [r[c] for r in expected] for c in ["eye_color", "favorite_color", "address", "postal_code", "city", "country"]},
    })
    config = pe.EncryptionConfiguration(footer_key=KID, uniform_encryption=True, double_wrapping=False,
                                        data_key_length_bits=256, plaintext_footer=False)
    props = crypto_factory(key).file_encryption_properties(pe.KmsConnectionConfig(), config)
    out = tmp_path / "pyarrow.parquet"
    pq.write_table(table, out, encryption_properties=props)

    shown = json.loads(conclave("data", "inspect", str(out), "--key-file", str(private), "--sample", "40"))
    assert shown["key_material"]["masterKeyID"] == KID
    assert [{k: str(v) for k, v in r.items()} for r in shown["sample"]] == expected


def shared_key_request(url, account, key_b64, method="PUT", body=b""):
    """A request signed with the storage account key (Shared Key), as Azure Storage accepts it."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    version = "2021-08-06"
    parsed = urllib.request.urlparse(url)
    params = urllib.parse.parse_qs(parsed.query)
    resource = f"/{account}{parsed.path}" + "".join(f"\n{k}:{v[0]}" for k, v in sorted(params.items()))
    length = str(len(body)) if body else ""
    to_sign = f"{method}\n\n\n{length}\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}"
    signature = base64.b64encode(hmac.new(base64.b64decode(key_b64), to_sign.encode(), hashlib.sha256).digest()).decode()
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    headers = {"x-ms-date": date, "x-ms-version": version, "Authorization": f"SharedKey {account}:{signature}"}
    if method == "PUT":
        headers["Content-Length"] = str(len(body))
    conn.request(method, parsed.path + (f"?{parsed.query}" if parsed.query else ""), body=body or None, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    assert resp.status < 300, f"{method} {url}: {resp.status} {data[:300]!r}"
    return data


# Azurite's documented development account (public, emulator-only).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture
def azurite(tmp_path):
    binary = os.environ.get("AZURITE_BLOB", str(ROOT / ".ci-cache" / "node" / "node_modules" / ".bin" / "azurite-blob"))
    assert os.path.exists(binary), f"azurite is not installed at {binary}: run scripts/test, which installs it"
    port = free_port()
    log = open(tmp_path / "azurite.log", "wb")
    proc = subprocess.Popen([binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
                             "--skipApiVersionCheck", "--disableProductStyleUrl", "--silent"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1)
            except urllib.error.HTTPError:
                break  # it answers (with an error for the bare URL): it is up
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_round_trip_through_azure_blob_storage(tmp_path, vault_key, azurite):
    _, public, private = vault_key
    csv_path, expected = generated(tmp_path, 300)
    shared_key_request(f"{azurite}/{AZURITE_ACCOUNT}/datasets?restype=container", AZURITE_ACCOUNT, AZURITE_KEY)
    env = {**os.environ, "AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": azurite}
    url = "az://datasets/fabrikam/records.parquet"

    def run(*args):
        r = subprocess.run([conclave.path, *args], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    summary = json.loads(run("data", "encrypt", "--key", str(public), "-i", str(csv_path), "-o", url))
    assert summary["rows"] == 300
    shown = json.loads(run("data", "inspect", url, "--key-file", str(private), "--sample", "300"))
    assert shown["footer"] == "PARE"
    assert [{k: str(v) for k, v in r.items()} for r in shown["sample"]] == expected

    # Storage holds ciphertext only.
    blob = shared_key_request(f"{azurite}/{AZURITE_ACCOUNT}/datasets/fabrikam/records.parquet", AZURITE_ACCOUNT, AZURITE_KEY,
                              method="GET")
    assert len(blob) == summary["bytes"]
    for r in expected[:20]:
        assert r["name"].encode() not in blob and r["phone"].encode() not in blob

    # Re-wrapped in place on Blob Storage (a block-list commit, made only while the blob is still
    # the version read): the pages are unchanged and the new key alone opens it.
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = new_key.public_key().public_numbers()
    new_public = tmp_path / "new.json"
    new_public.write_text(json.dumps({"kid": KID2, "kty": "RSA", "n": b64url_int(n.n, 256), "e": b64url_int(n.e, 3)}))
    moved = json.loads(run("data", "rewrap", url, "--key-file", str(private), "--to", str(new_public)))
    assert moved["from"] == KID and moved["to"] == KID2
    after = shared_key_request(f"{azurite}/{AZURITE_ACCOUNT}/datasets/fabrikam/records.parquet", AZURITE_ACCOUNT,
                               AZURITE_KEY, method="GET")
    kept = moved["bytes_unchanged"]
    assert after[:kept] == blob[:kept] and len(after) == kept + moved["tail_bytes"]
    new_private = tmp_path / "new.pk8"
    new_private.write_bytes(new_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    shown = json.loads(run("data", "inspect", url, "--key-file", str(new_private), "--sample", "300"))
    assert [{k: str(v) for k, v in r.items()} for r in shown["sample"]] == expected


# --- Every mode of PyArrow's Parquet modular encryption: read, or refused with the mode named ---

# PyArrow splits column_keys on ':' so column keys cannot name a URL key id; they name the vault
# key by its name, which Conclave matches to the released key (see dataset::names_vault_key).
KEY_NAME = "fabrikam-data"
OTHER_KEY_NAME = "fabrikam-salary"


def pyarrow_modes_file(tmp_path, key, other_key, mode):
    """A small table written by PyArrow in `mode`; returns (path, the table)."""
    keys = {KID: key, KEY_NAME: key, OTHER_KEY_NAME: other_key}

    class Kms(pe.KmsClient):
        def __init__(self, config):
            super().__init__()

        def wrap_key(self, key_bytes, master_key_identifier):
            return base64.b64encode(keys[master_key_identifier].public_key().encrypt(key_bytes, OAEP256)).decode()

        def unwrap_key(self, wrapped_key, master_key_identifier):
            return keys[master_key_identifier].decrypt(base64.b64decode(wrapped_key), OAEP256)

    table = pa.table({
        "name": ["ann", "bob", "cy"],
        "age": pa.array([30, 40, 50], pa.int32()),
        "salary": pa.array([1.5, 2.5, 3.5]),
        "joined": pa.array([datetime.date(2020, 1, 2), datetime.date(2021, 3, 4), datetime.date(2022, 5, 6)]),
    })
    every = ["name", "age", "salary", "joined"]
    single = dict(double_wrapping=False)
    configs = {
        "uniform": dict(footer_key=KID, uniform_encryption=True, **single),
        "double wrapping": dict(footer_key=KID, uniform_encryption=True, double_wrapping=True),
        "column keys": dict(footer_key=KEY_NAME, column_keys={KEY_NAME: every}, **single),
        "column keys, double wrapping": dict(footer_key=KEY_NAME, column_keys={KEY_NAME: every}, double_wrapping=True),
        "column key of another master key": dict(
            footer_key=KEY_NAME, column_keys={KEY_NAME: ["name", "age", "joined"], OTHER_KEY_NAME: ["salary"]}, **single),
        "columns left in plaintext": dict(footer_key=KEY_NAME, column_keys={KEY_NAME: ["salary"]}, **single),
        "plaintext footer": dict(footer_key=KEY_NAME, column_keys={KEY_NAME: every}, plaintext_footer=True, **single),
        "plaintext footer, columns left in plaintext": dict(
            footer_key=KEY_NAME, column_keys={KEY_NAME: ["salary"]}, plaintext_footer=True, **single),
        "external key material": dict(footer_key=KID, uniform_encryption=True, internal_key_material=False, **single),
        "AES_GCM_CTR_V1": dict(footer_key=KID, uniform_encryption=True, encryption_algorithm="AES_GCM_CTR_V1", **single),
    }
    out = tmp_path / "pyarrow.parquet"
    factory = pe.CryptoFactory(lambda config: Kms(config))
    config = pe.EncryptionConfiguration(**configs[mode])
    if mode == "external key material":
        props = factory.file_encryption_properties(pe.KmsConnectionConfig(), config, str(out), None)
    else:
        props = factory.file_encryption_properties(pe.KmsConnectionConfig(), config)
    pq.write_table(table, out, encryption_properties=props)
    return out, table


def inspect_json(*args):
    """`conclave data inspect`: (exit code, the JSON it printed or None, stderr)."""
    r = subprocess.run([conclave.path, "data", "inspect", *args], capture_output=True, text=True, timeout=120)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None), r.stderr


READ_MODES = {
    # mode: (magic, mode string without the key, mode string with the key)
    "uniform": ("PARE", "encrypted footer, single wrapping", "encrypted footer, uniform, single wrapping"),
    "double wrapping": ("PARE", "encrypted footer, double wrapping", "encrypted footer, uniform, double wrapping"),
    "column keys": ("PARE", "encrypted footer, single wrapping", "encrypted footer, column keys, single wrapping"),
    "column keys, double wrapping": ("PARE", "encrypted footer, double wrapping", "encrypted footer, column keys, double wrapping"),
    "plaintext footer": ("PAR1", "plaintext footer, column keys, single wrapping", "plaintext footer, column keys, single wrapping"),
}


@pytest.mark.parametrize("mode", sorted(READ_MODES))
def test_pyarrow_modes_conclave_reads(tmp_path, vault_key, mode):
    key, _, private = vault_key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path, table = pyarrow_modes_file(tmp_path, key, other, mode)
    magic, without_key, with_key = READ_MODES[mode]
    assert path.read_bytes()[-4:] == magic.encode()

    code, shown, err = inspect_json(str(path))
    assert code == 0, err
    assert shown["encrypted"] is True, shown  # decided from the metadata, PAR1 included
    assert shown["footer"] == magic
    assert shown["mode"] == without_key

    code, shown, err = inspect_json(str(path), "--key-file", str(private), "--sample", "3")
    assert code == 0, err
    assert shown["mode"] == with_key
    assert {c["column"]: c["encryption"] for c in shown["columns"]} == {
        c: ("column key" if "column keys" in mode or mode == "plaintext footer" else "footer key") for c in table.column_names}
    expected = [{k: str(v) for k, v in r.items()} for r in table.to_pylist()]
    assert shown["sample"] == expected


REFUSED_MODES = {
    # mode: what the refusal must say (with the key; the inspection without it says the same or
    # shows the mode)
    "columns left in plaintext": "column name is stored in plaintext",
    "plaintext footer, columns left in plaintext": "column name is stored in plaintext",
    "column key of another master key": "column salary is encrypted under a column key wrapped by fabrikam-salary",
    "external key material": "external key material is not supported",
    "AES_GCM_CTR_V1": "AES_GCM_CTR_V1",
}


@pytest.mark.parametrize("mode", sorted(REFUSED_MODES))
def test_pyarrow_modes_conclave_refuses_with_the_mode_named(tmp_path, vault_key, mode):
    key, _, private = vault_key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path, _ = pyarrow_modes_file(tmp_path, key, other, mode)
    code, shown, err = inspect_json(str(path), "--key-file", str(private), "--sample", "3")
    assert code != 0
    assert REFUSED_MODES[mode] in err, err
    for secret in ["ann", "bob"]:
        assert secret not in err
    if mode == "plaintext footer, columns left in plaintext":
        # Without the key, the plaintext footer already tells which columns are unprotected.
        code, shown, err = inspect_json(str(path))
        assert code == 0, err
        assert shown["encrypted"] is True and shown["footer"] == "PAR1"
        assert {c["column"]: c["encryption"] for c in shown["columns"]} == {
            "name": "none", "age": "none", "salary": "column key", "joined": "none"}
        assert "name, age, joined are stored in plaintext" in shown["note"]


def test_a_plain_parquet_file_is_not_called_encrypted(tmp_path, vault_key):
    _, _, private = vault_key
    out = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"name": ["ann"]}), out)
    code, shown, err = inspect_json(str(out))
    assert code == 0, err
    assert shown["encrypted"] is False and shown["mode"] == "none"
    assert "anyone with the file can read it" in shown["note"]
    code, _, err = inspect_json(str(out), "--key-file", str(private))
    assert code != 0 and "not encrypted" in err


def test_a_tampered_plaintext_footer_is_refused(tmp_path, vault_key):
    """A plaintext footer is signed with the footer key: renaming a column in it (the footer is
    readable, so an attacker can edit it) breaks the signature."""
    key, _, private = vault_key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path, _ = pyarrow_modes_file(tmp_path, key, other, "plaintext footer")
    data = bytearray(path.read_bytes())
    at = data.rfind(b"salary")
    assert at > 0
    data[at:at + 6] = b"wealth"
    path.write_bytes(bytes(data))
    code, _, err = inspect_json(str(path), "--key-file", str(private), "--sample", "3")
    assert code != 0
    assert "cannot be read" in err or "signature" in err, err


KID2 = KID.replace("00112233445566778899aabbccddeeff", "ffeeddccbbaa99887766554433221100")


@pytest.mark.parametrize("mode", ["uniform", "double wrapping", "conclave"])
def test_rewrap_moves_a_pyarrow_file_to_a_new_key_pyarrow_reads(tmp_path, vault_key, mode):
    """`conclave data rewrap` (offline, with the old key's private part) moves a file to a new key
    by rewriting its tail: PyArrow reads it with the new key and only the new key, and every byte
    before the FileCryptoMetaData is unchanged (the data is not re-encrypted)."""
    key, public, private = vault_key
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = new_key.public_key().public_numbers()
    new_public = tmp_path / "new.json"
    new_public.write_text(json.dumps({"kid": KID2, "kty": "RSA", "n": b64url_int(n.n, 256), "e": b64url_int(n.e, 3)}))
    if mode == "conclave":
        csv_path, _ = generated(tmp_path, 30)
        path = tmp_path / "conclave.parquet"
        conclave("data", "encrypt", "--key", str(public), "-i", str(csv_path), "-o", str(path))
        table = pq.read_table(path, decryption_properties=crypto_factory(key).file_decryption_properties(pe.KmsConnectionConfig()))
    else:
        path, table = pyarrow_modes_file(tmp_path, key, key, mode)
    before = path.read_bytes()

    summary = json.loads(conclave("data", "rewrap", str(path), "--key-file", str(private), "--to", str(new_public)))
    assert summary["from"] == KID and summary["to"] == KID2
    assert summary["wrapping"] == ("double wrapping" if mode == "double wrapping" else "single wrapping")
    after = path.read_bytes()
    kept = summary["bytes_unchanged"]
    assert after[:kept] == before[:kept] and len(after) == kept + summary["tail_bytes"]

    keys = {KID: key, KID2: new_key}
    asked = []

    class Kms(pe.KmsClient):
        def __init__(self, config):
            super().__init__()

        def wrap_key(self, key_bytes, master_key_identifier):
            raise AssertionError("reading wraps nothing")

        def unwrap_key(self, wrapped_key, master_key_identifier):
            asked.append(master_key_identifier)
            return keys[master_key_identifier].decrypt(base64.b64decode(wrapped_key), OAEP256)

    read = pq.read_table(path, decryption_properties=pe.CryptoFactory(Kms).file_decryption_properties(pe.KmsConnectionConfig()))
    assert read.equals(table)
    assert asked == [KID2]
    # The old key no longer opens the file.
    keys[KID2] = key
    with pytest.raises(Exception):
        pq.read_table(path, decryption_properties=pe.CryptoFactory(Kms).file_decryption_properties(pe.KmsConnectionConfig()))


def test_rewrap_refuses_a_plaintext_footer_with_the_reason(tmp_path, vault_key):
    key, public, private = vault_key
    path, _ = pyarrow_modes_file(tmp_path, key, key, "plaintext footer")
    before = path.read_bytes()
    r = subprocess.run([conclave.path, "data", "rewrap", str(path), "--key-file", str(private), "--to", str(public)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "plaintext footer, which is signed with the footer key" in r.stderr, r.stderr
    assert path.read_bytes() == before
