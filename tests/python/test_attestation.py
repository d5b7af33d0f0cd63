"""A standard JWT library (PyJWT) verifies Conclave attestation tokens offline, with nothing
but the service's published keys: the token format is plain RS256 + JWKS, as with MAA."""

import base64
import json
import subprocess
import time
from urllib.request import urlopen

import jwt
import pytest
from cryptography import x509

from conftest import conclave, free_port, wait_http


@pytest.fixture
def attestation_service(tmp_path):
    sim = tmp_path / "sim"
    ark = conclave("sim-host", "root", "--state-dir", str(sim)).strip()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "attest.log", "wb")
    proc = subprocess.Popen(
        [
            conclave.path, "attest", "serve", "--listen", f"127.0.0.1:{port}",
            "--state-dir", str(tmp_path / "attest"), "--sim-root", ark,
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"{url}/healthz")
        yield url, sim
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0, "the service exits cleanly on SIGTERM"


def launch_and_attest(tmp_path, url, sim, nonce):
    config = tmp_path / "launch.toml"
    config.write_text('party = "fabrikam"\n')
    token_file = tmp_path / "token.jwt"
    args = ["tee", "attest", "--attestation-url", url, "--nonce", nonce, "--out", str(token_file)]
    conclave("sim-host", "launch", "--state-dir", str(sim), "--config", str(config), "--", conclave.path, *args)
    measured = json.loads(conclave("measure", conclave.path, str(config), "--json", "--", *args))
    return token_file.read_text().strip(), measured


def test_pyjwt_verifies_a_token_with_the_published_keys(tmp_path, attestation_service):
    url, sim = attestation_service
    token, measured = launch_and_attest(tmp_path, url, sim, "py-nonce-1")

    # Discovery, as any OpenID-aware client does it.
    discovery = json.load(urlopen(f"{url}/.well-known/openid-configuration"))
    assert discovery["issuer"] == url
    jwks_client = jwt.PyJWKClient(discovery["jwks_uri"])
    signing_key = jwks_client.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, signing_key.key, algorithms=["RS256"], issuer=url,
                        options={"require": ["exp", "iat", "nbf", "iss"]})

    assert claims["x-conclave-platform"] == "sim"
    assert claims["x-ms-attestation-type"] == "sevsnpvm"
    assert claims["nonce"] == "py-nonce-1"
    assert claims["x-ms-sevsnpvm-launchmeasurement"] == measured["launchmeasurement"]
    assert claims["x-ms-sevsnpvm-hostdata"] == measured["hostdata"]
    assert claims["x-ms-sevsnpvm-is-debuggable"] is False
    tee_key = claims["x-ms-runtime"]["keys"][0]
    assert tee_key["kty"] == "RSA" and tee_key["key_ops"] == ["encrypt"]
    assert claims["exp"] > time.time() > claims["nbf"] - 60

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["jku"] == f"{url}/certs"


def test_pyjwt_rejects_a_tampered_token(tmp_path, attestation_service):
    url, sim = attestation_service
    token, _ = launch_and_attest(tmp_path, url, sim, "py-nonce-2")
    head, body, sig = token.split(".")
    claims = json.loads(jwt.utils.base64url_decode(body))
    claims["x-ms-sevsnpvm-is-debuggable"] = True
    forged = ".".join([head, jwt.utils.base64url_encode(json.dumps(claims).encode()).decode(), sig])
    key = jwt.PyJWKClient(f"{url}/certs").get_signing_key_from_jwt(token).key
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, key, algorithms=["RS256"], issuer=url)


def test_jwks_publishes_x5c_certificates(attestation_service):
    url, _ = attestation_service
    jwks = json.load(urlopen(f"{url}/certs"))
    assert jwks["keys"], "at least one signing key is published"
    for k in jwks["keys"]:
        assert k["kty"] == "RSA" and k["alg"] == "RS256" and k["use"] == "sig"
        assert k["x5c"], "each key carries its certificate"
        cert = x509.load_der_x509_certificate(base64.b64decode(k["x5c"][0]))
        numbers = cert.public_key().public_numbers()
        assert jwt.utils.base64url_encode(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")).decode() == k["n"]
