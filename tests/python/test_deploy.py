"""The deployment files under deploy/, checked as their platforms would: the Helm chart linted
by Helm and its rendered manifests validated (strictly) against the Kubernetes API schemas, the
workload configs it renders parsed by the conclave binary itself, the ARM templates validated
against Azure's published resource schemas, the cloud-init file against cloud-init's published
schema, and no secret anywhere under deploy/. Schemas: tests/deploy/schemas (README there)."""

import base64
import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from conftest import ROOT, conclave

DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "conclave"
SCHEMAS = ROOT / "tests" / "deploy" / "schemas"
BIN = os.path.dirname(sys.executable)
KUBERNETES_VERSION = "1.30.0"


def helm(*args, check=True):
    r = subprocess.run([os.path.join(BIN, "helm"), *args], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, f"helm {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r


def render(*values, sets=()):
    args = ["template", "conclave", str(CHART), "--namespace", "parties"]
    for v in values:
        args += ["-f", str(CHART / v)]
    for s in sets:
        args += ["--set", s]
    return helm(*args).stdout


# Each party's security policy, as az confcom would give it (base64 Rego).
POLICIES = tuple(f"parties[{i}].securityPolicy={base64.b64encode(f'package policy{i}'.encode()).decode()}"
                 for i in range(3))

PROFILES = {
    "three companies, Kata pods": (["values-three-companies.yaml"], POLICIES),
    "three companies, virtual nodes (confidential ACI)": (
        ["values-three-companies.yaml", "values-virtual-nodes.yaml"], POLICIES),
    "Microsoft Azure Attestation instead of the attestation service": (
        ["values-three-companies.yaml"],
        POLICIES + ("attestation.enabled=false", "attestation.authority=https://sharedweu.weu.attest.azure.net")),
    "Contoso runs its own vault elsewhere": (
        ["values-three-companies.yaml"], POLICIES + ("parties[0].vaultUrl=https://vault.contoso.example:8443",)),
}


@pytest.mark.parametrize("profile", PROFILES)
def test_the_chart_lints_and_renders_manifests_valid_against_the_kubernetes_schemas(profile, tmp_path):
    values, sets = PROFILES[profile]
    lint = ["lint", str(CHART), "--strict"]
    for v in values:
        lint += ["-f", str(CHART / v)]
    for s in sets:
        lint += ["--set", s]
    helm(*lint)
    rendered = render(*values, sets=sets)
    out = tmp_path / "rendered.yaml"
    out.write_text(rendered)
    r = subprocess.run([os.path.join(BIN, "kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION,
                        str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = sorted({d["kind"] for d in docs})
    # Only cert-manager's Certificate is outside the Kubernetes API; it is checked below.
    unchecked = [line for line in (r.stdout + r.stderr).splitlines() if "Couldn't find schema" in line]
    assert all("kind Certificate with api version cert-manager.io/v1" in line for line in unchecked), unchecked
    for d in docs:
        if d["kind"] == "Certificate":
            assert d["spec"]["secretName"] and d["spec"]["issuerRef"]["name"], d
    by_kind = {k: [d for d in docs if d["kind"] == k] for k in kinds}
    parties = ["contoso", "fabrikam", "woodgrove"]
    assert [d["metadata"]["name"] for d in by_kind["Deployment"]] == [f"conclave-{p}-workload" for p in parties]
    vaults = [d["metadata"]["name"] for d in by_kind["StatefulSet"] if "-vault" in d["metadata"]["name"]]
    external = [p for p, s in zip(parties, ("parties[0].vaultUrl" in " ".join(sets),)) if s]
    assert vaults == [f"conclave-{p}-vault" for p in parties if p not in external]
    for d in by_kind["Deployment"]:
        text = d["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]
        if external:
            assert 'key = "https://vault.contoso.example:8443/keys/contoso-data"' in text
    assert ("conclave-attest" in [d["metadata"]["name"] for d in by_kind["StatefulSet"]]) == (
        "attestation.enabled=false" not in sets)
    assert by_kind["NetworkPolicy"], "no NetworkPolicy"
    for d in by_kind["Deployment"] + by_kind["StatefulSet"]:
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
    for d in by_kind["Deployment"]:
        pod = d["spec"]["template"]["spec"]
        if "values-virtual-nodes.yaml" in values:
            assert "runtimeClassName" not in pod
            assert pod["nodeSelector"] == {"virtualization": "virtualnode2"}
        else:
            assert pod["runtimeClassName"] == "kata-cc-isolation"


def test_the_chart_sets_each_partys_security_policy_where_its_platform_reads_it():
    policy = base64.b64encode(b"package policy\n").decode()
    for values, annotation in [
        (["values-three-companies.yaml"], "io.katacontainers.config.agent.policy"),
        (["values-three-companies.yaml", "values-virtual-nodes.yaml"],
         "microsoft.containerinstance.virtualnode.ccepolicy"),
    ]:
        docs = [d for d in yaml.safe_load_all(render(*values, sets=POLICIES + (f"parties[0].securityPolicy={policy}",))) if d]
        contoso = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "conclave-contoso-workload")
        assert contoso["spec"]["template"]["metadata"]["annotations"][annotation] == policy


def test_the_chart_refuses_a_deployment_missing_a_required_value_and_names_it():
    for sets, needle in [
        (("parties[0].masterKeySecret=null",), "masterKeySecret is required"),
        (("parties[2].adminTokenSecret=null",), "parties[woodgrove].adminTokenSecret is required"),
        (("parties[1].dataset=",), "parties[fabrikam].dataset is required"),
        (("parties[2].id=Woodgrove",), "must be 1-20 lowercase letters"),
        (("attestation.enabled=false",), "attestation.authority is required"),
        (("certManager.issuer=null",), "needs a TLS Secret, or certManager.issuer"),
        (("parties[1].securityPolicy=",), "parties[fabrikam].securityPolicy is required"),
    ]:
        args = ["template", "conclave", str(CHART), "-f", str(CHART / "values-three-companies.yaml")]
        for s in POLICIES:
            args += ["--set", s]
        for s in sets:
            args += ["--set", s]
        r = helm(*args, check=False)
        assert r.returncode != 0 and needle in r.stderr, (sets, r.stderr)


def test_an_inline_ca_goes_into_the_pinned_config_and_replaces_the_mount():
    pem = "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"
    docs = [d for d in yaml.safe_load_all(render("values-three-companies.yaml",
                                                  sets=POLICIES + (f"caBundle.pem={pem}",))) if d]
    for d in [d for d in docs if d["kind"] == "Deployment"]:
        pod = d["spec"]["template"]["spec"]
        assert "ca" not in [v["name"] for v in pod["volumes"]]
        text = pod["containers"][0]["env"][0]["value"].replace('listen = "0.0.0.0:8443"', 'listen = "127.0.0.1:0"')
        assert "ca_file" not in text
        # The binary parses the config and reads the inline CA, which (here) is no certificate.
        r = subprocess.run([os.environ["CONCLAVE_BIN"], "party", "serve", "--tee", "none"],
                           env=dict(os.environ, CONCLAVE_PARTY_CONFIG_TOML=text),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "ca_pem" in r.stderr and "CONCLAVE_PARTY_CONFIG_TOML is invalid" not in r.stderr, r.stderr


def test_pods_render_without_their_policies_only_when_asked_for_policy_generation():
    docs = [d for d in yaml.safe_load_all(render("values-three-companies.yaml",
                                                  sets=("workload.renderForPolicyGeneration=true",))) if d]
    pods = [d for d in docs if d["kind"] == "Deployment"]
    assert len(pods) == 3
    for d in pods:
        assert "io.katacontainers.config.agent.policy" not in (d["spec"]["template"]["metadata"].get("annotations") or {})
    # Each vault's first admin is the owner's token, given by its hash from a Secret: the image
    # has no shell to read a generated token out of the vault's volume.
    for v in [d for d in docs if d["kind"] == "StatefulSet" and "vault" in d["metadata"]["name"]]:
        env = {e["name"]: e for e in v["spec"]["template"]["spec"]["containers"][0]["env"]}
        ref = env["CONCLAVE_VAULT_ADMIN_TOKEN_SHA256"]["valueFrom"]["secretKeyRef"]
        assert ref["name"].endswith("-vault-admin") and ref["key"] == "sha256", ref
    # Vaults first, workloads later: with workload.enabled=false only the vaults render.
    docs = [d for d in yaml.safe_load_all(render("values-three-companies.yaml",
                                                  sets=("workload.enabled=false",))) if d]
    assert not [d for d in docs if d["kind"] == "Deployment"]
    assert len([d for d in docs if d["kind"] == "StatefulSet"]) == 4


def test_the_workload_configs_the_chart_renders_are_what_the_workload_parses():
    docs = [d for d in yaml.safe_load_all(render("values-three-companies.yaml", sets=POLICIES)) if d]
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        env = {e["name"]: e["value"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        text = env["CONCLAVE_PARTY_CONFIG_TOML"]
        # The real parser, in the real binary: with a free port instead of 8443, it gets past
        # the config (and binding) and stops at the CA bundle, which exists only in the pod.
        text = text.replace('listen = "0.0.0.0:8443"', 'listen = "127.0.0.1:0"')
        r = subprocess.run([os.environ["CONCLAVE_BIN"], "party", "serve", "--tee", "none"],
                           env=dict(os.environ, CONCLAVE_PARTY_CONFIG_TOML=text),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        assert "/etc/conclave/ca/ca.crt" in r.stderr and "CONCLAVE_PARTY_CONFIG_TOML is invalid" not in r.stderr, r.stderr
        party = d["metadata"]["labels"]["conclave.dev/party"]
        companies = re.findall(r'company = "(\w+)"', text)
        expected = {"contoso": ["contoso", "fabrikam"], "fabrikam": ["contoso", "fabrikam"],
                    "woodgrove": ["contoso", "fabrikam", "woodgrove"]}[party]
        assert companies == expected, (party, companies)
        assert ("analysis = true" in text) == (party == "woodgrove")


def azure_registry():
    """Published schemas by their URL, and nothing else."""
    files = {
        "2019-04-01/deploymentTemplate.json": "2019-04-01-deploymentTemplate.json",
        "common/definitions.json": "common-definitions.json",
        "2023-05-01/Microsoft.ContainerInstance.json": "2023-05-01-Microsoft.ContainerInstance.json",
        "2024-10-01/Microsoft.Network.NRP.json": "2024-10-01-Microsoft.Network.NRP.json",
        "2024-07-01/Microsoft.Compute.json": "2024-07-01-Microsoft.Compute.json",
        "2024-03-02/Microsoft.Compute.json": "2024-03-02-Microsoft.Compute.json",
    }
    registry = Registry()
    loaded = {}
    for path, name in files.items():
        doc = json.loads((SCHEMAS / "azure" / name).read_text(encoding="utf-8-sig"))
        loaded[path] = doc
        registry = registry.with_resource(
            f"https://schema.management.azure.com/schemas/{path}",
            Resource(contents=doc, specification=DRAFT4))
    return registry, loaded


# The resource types (and API versions) the templates use, each with its published definition.
RESOURCE_TYPES = {
    ("Microsoft.ContainerInstance/containerGroups", "2023-05-01"): "2023-05-01/Microsoft.ContainerInstance.json#/resourceDefinitions/containerGroups",
    ("Microsoft.Network/networkSecurityGroups", "2024-10-01"): "2024-10-01/Microsoft.Network.NRP.json#/resourceDefinitions/networkSecurityGroups",
    ("Microsoft.Network/virtualNetworks", "2024-10-01"): "2024-10-01/Microsoft.Network.NRP.json#/resourceDefinitions/virtualNetworks",
    ("Microsoft.Network/publicIPAddresses", "2024-10-01"): "2024-10-01/Microsoft.Network.NRP.json#/resourceDefinitions/publicIPAddresses",
    ("Microsoft.Network/natGateways", "2024-10-01"): "2024-10-01/Microsoft.Network.NRP.json#/resourceDefinitions/natGateways",
    ("Microsoft.Network/networkInterfaces", "2024-10-01"): "2024-10-01/Microsoft.Network.NRP.json#/resourceDefinitions/networkInterfaces",
    ("Microsoft.Network/applicationGateways", "2024-10-01"): "2024-10-01/Microsoft.Network.NRP.json#/resourceDefinitions/applicationGateways",
    ("Microsoft.Network/ApplicationGatewayWebApplicationFirewallPolicies", "2024-10-01"): "2024-10-01/Microsoft.Network.NRP.json#/resourceDefinitions/ApplicationGatewayWebApplicationFirewallPolicies",
    ("Microsoft.Compute/virtualMachines", "2024-07-01"): "2024-07-01/Microsoft.Compute.json#/resourceDefinitions/virtualMachines",
    ("Microsoft.Compute/diskEncryptionSets", "2024-03-02"): "2024-03-02/Microsoft.Compute.json#/resourceDefinitions/diskEncryptionSets",
}


def validate_arm(template):
    registry, loaded = azure_registry()
    schema = json.loads(json.dumps(loaded["2019-04-01/deploymentTemplate.json"]))
    base = "https://schema.management.azure.com/schemas/"
    schema["definitions"]["resource"] = {"oneOf": [
        {"allOf": [{"$ref": "#/definitions/resourceBase"}, {"$ref": base + ref}]}
        for ref in RESOURCE_TYPES.values()
    ]}
    validator = Draft4Validator(schema, registry=registry)
    errors = sorted(validator.iter_errors(template), key=lambda e: list(e.path))
    # A failing resource's detail: validate it against its own definition alone.
    detail = []
    for r in template.get("resources", []):
        ref = RESOURCE_TYPES.get((r["type"], r["apiVersion"]))
        assert ref, f"{r['type']}@{r['apiVersion']} is not among the checked resource types"
        v = Draft4Validator({"$ref": base + ref}, registry=registry)
        detail += [f"{r['type']} {r.get('name')}: {e.message} at {list(e.absolute_path)}"
                   for e in v.iter_errors(r)]
    return [e.message for e in errors], detail


@pytest.mark.parametrize("template", ["aci/conclave-aci.json", "cvm/conclave-cvm.json"])
def test_the_arm_templates_are_valid_against_azures_published_schemas(template):
    doc = json.loads((DEPLOY / template).read_text())
    errors, detail = validate_arm(doc)
    assert not errors and not detail, "\n".join(errors + detail)
    for name, p in doc["parameters"].items():
        assert p.get("metadata", {}).get("description"), f"parameter {name} has no description"
    # A broken template does fail: the validation is not vacuous.
    broken = json.loads(json.dumps(doc))
    first = broken["resources"][0]["properties"]
    if "sku" in first:
        first["sku"] = "Gold"  # ContainerGroupSku: Standard, Dedicated or Confidential
    else:
        first["securityRules"][0]["properties"]["direction"] = "Sideways"
    errors, detail = validate_arm(broken)
    assert errors or detail


def test_the_aci_container_groups_are_confidential_with_their_cce_policy():
    doc = json.loads((DEPLOY / "aci" / "conclave-aci.json").read_text())
    workloads = [r for r in doc["resources"] if r["name"].endswith("-workload', parameters('prefix'), parameters('parties')[copyIndex()].id)]")]
    assert len(workloads) == 1
    props = workloads[0]["properties"]
    assert props["sku"] == "Confidential"
    assert "ccePolicy" in props["confidentialComputeProperties"]["ccePolicy"]


def test_the_cloud_init_is_valid_against_cloud_inits_schema():
    schema = json.loads((SCHEMAS / "cloud-init" / "schema-cloud-config-v1.json").read_text())
    text = (DEPLOY / "cvm" / "cloud-init.yaml").read_text()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    from jsonschema import Draft202012Validator, Draft7Validator
    cls = Draft202012Validator if "2020-12" in schema.get("$schema", "") else Draft7Validator
    errors = [f"{e.message} at {list(e.absolute_path)}" for e in cls(schema).iter_errors(doc)]
    assert not errors, "\n".join(errors)
    # The compensating controls are there.
    runcmd = "\n".join(c if isinstance(c, str) else " ".join(c) for c in doc["runcmd"])
    for control in ["apt-get purge -y openssh-server", "systemctl mask ssh.service",
                    "serial-getty@ttyS0.service", "sha256sum -c"]:
        assert control in runcmd, control
    assert doc["ssh_pwauth"] is False
    unit = next(f for f in doc["write_files"] if f["path"].endswith("conclave-workload.service"))
    assert "--tee azure-vtpm" in unit["content"]


SECRET_MARKERS = [r"-----BEGIN [A-Z ]*PRIVATE KEY-----", r"AccountKey=", r"\bsig=[A-Za-z0-9%]{20,}",
                  r"\"password\"\s*:\s*\"(?!\[)[^\"]+\"", r"\b[0-9a-f]{64}\b"]


def test_nothing_under_deploy_holds_a_secret():
    for path in DEPLOY.rglob("*"):
        # deploy/.image-root is the image build's scratch space (git-ignored).
        if path.is_file() and ".image-root" not in path.parts:
            text = path.read_text()
            for marker in SECRET_MARKERS:
                assert not re.search(marker, text), f"{path}: {marker}"
