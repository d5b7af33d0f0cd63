"""API fuzzing of the running vault and attestation service with schemathesis, from the OpenAPI
descriptions the services generate (`conclave kms openapi`, `conclave attest openapi`): for
SCHEMATHESIS_SECONDS each (default 40), generated and mutated requests of every operation must
get no 5xx, every error must have Azure's `{"error": {"code", "message"}}` shape
(api_fuzz_checks.py), and every answer must conform to the schema the description gives for
its status (the typed wire structs both the services and their clients use). The runs' output goes to test-artifacts/api-fuzz/."""

import os
import re
import subprocess
import sys

from conftest import ROOT, conclave
from test_keyvault_sdk import deployment  # noqa: F401  (the fixture: attestation service + vault over TLS)

ARTIFACTS = ROOT / "test-artifacts" / "api-fuzz"
SECONDS = os.environ.get("SCHEMATHESIS_SECONDS", "40")


def fuzz(name, spec, url, ca, headers=()):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    spec_file = ARTIFACTS / f"{name}-openapi.json"
    spec_file.write_text(spec)
    args = [os.path.join(os.path.dirname(sys.executable), "st"), "run", str(spec_file), "--url", url,
            "--tls-verify", ca, "--checks", "not_a_server_error,azure_error_shape,response_schema_conformance",
            "--max-time", SECONDS, "--workers", "1", "--no-color", "--seed", "1",
            # Readiness answers 503 by design when an authority cannot be reached in time.
            "--exclude-path", "/readyz"]
    for h in headers:
        args += ["-H", h]
    env = dict(os.environ, SCHEMATHESIS_HOOKS="api_fuzz_checks",
               PYTHONPATH=str(ROOT / "tests" / "python"))
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=int(SECONDS) + 120)
    (ARTIFACTS / f"{name}.log").write_text(result.stdout + result.stderr)
    cases = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert result.returncode == 0, f"schemathesis found failures against the {name}:\n{result.stdout[-4000:]}"
    assert cases and int(cases.group(1)) > 100, f"too few test cases against the {name}:\n{result.stdout[-2000:]}"
    print(f"{name}: {cases.group(0)} test cases in {SECONDS} s")


def test_the_vault_api_answers_every_generated_request_without_5xx_and_in_azure_error_shape(deployment):  # noqa: F811
    d = deployment
    fuzz("vault", conclave("kms", "openapi"), d["vault"], d["ca"],
         headers=[f"Authorization: Bearer {d['admin'].strip()}"])


def test_the_attestation_api_answers_every_generated_request_without_5xx_and_in_azure_error_shape(deployment):  # noqa: F811
    d = deployment
    fuzz("attestation", conclave("attest", "openapi"), d["attest"], d["ca"])
