use super::approval::{self, ApprovalError, ApprovalStatus};
use super::policy::OwnerTerms;
use super::*;
use conclave_protocol::release_policy::{Condition, ReleasePolicy};
use serde_json::json;

struct Keys {
    contoso: (String, String),
    fabrikam: (String, String),
}

fn keys() -> Keys {
    Keys {
        contoso: approval::generate_key().unwrap(),
        fabrikam: approval::generate_key().unwrap(),
    }
}

const SQL: &str = "SELECT country, COUNT(*) AS records FROM contoso GROUP BY country";

fn toml_text(k: &Keys, sql: &str) -> String {
    format!(
        r#"
format = 1
name = "partner-demographics"
description = "Where the partners' customers live."

[[parties]]
id = "contoso"
display_name = "Contoso"
roles = ["data-provider"]
approval_key = """{contoso}"""

[[parties]]
id = "fabrikam"
display_name = "Fabrikam Fashion"
roles = ["data-provider"]
approval_key = """{fabrikam}"""

[[parties]]
id = "woodgrove"
display_name = "Woodgrove Bank"
roles = ["analyst", "result-receiver"]
receiver_key = """{contoso}"""

[[inputs]]
table = "contoso"
provider = "contoso"
url = "az://contoso/records.parquet"
key = "https://contoso-vault.example:8443/keys/contoso-data"
schema = [
  {{ name = "name", type = "string" }},
  {{ name = "phone", type = "string" }},
  {{ name = "country", type = "string" }},
  {{ name = "salary", type = "decimal(12,2)", nullable = true }},
  {{ name = "age", type = "uint8" }},
]

[[inputs]]
table = "fabrikam"
provider = "fabrikam"
url = "az://fabrikam/records.parquet"
key = "https://fabrikam-vault.example:8443/keys/fabrikam-data"
schema = [{{ name = "country", type = "string" }}]

[[queries]]
name = "countries"
sql = "{sql}"

[output]
aggregate_only = true
k = 10
forbidden_columns = ["name", "phone"]
differential_privacy = {{ mechanism = "laplace", epsilon = 0.5 }}
"#,
        contoso = k.contoso.1,
        fabrikam = k.fabrikam.1,
    )
}

#[test]
fn the_digest_is_of_the_content_not_the_formatting() {
    let k = keys();
    let a = Contract::parse(&toml_text(&k, SQL)).unwrap();
    // Comments, blank lines and table order do not change it; the JSON form has it too.
    let reformatted = format!(
        "# approved by legal\n\n{}",
        toml_text(&k, SQL).replace("k = 10\n", "k = 10 # the floor\n")
    );
    let b = Contract::parse(&reformatted).unwrap();
    assert_eq!(a.digest(), b.digest());
    let json_form = serde_json::to_string_pretty(&a).unwrap();
    assert_eq!(Contract::parse(&json_form).unwrap().digest(), a.digest());
    // Members in another order, and CRLF line endings (a file saved on another system).
    let shuffled = reversed_members(&serde_json::to_value(&a).unwrap());
    assert!(!shuffled.starts_with(r#"{"description""#));
    assert_eq!(Contract::parse(&shuffled).unwrap().digest(), a.digest());
    let crlf = toml_text(&k, SQL).replace('\n', "\r\n");
    assert_eq!(Contract::parse(&crlf).unwrap().digest(), a.digest());
    assert_eq!(a.digest().len(), 64);
    // RFC 8785: members sorted, no whitespace, numbers in their shortest form.
    let canonical = String::from_utf8(a.canonical_json()).unwrap();
    assert!(canonical.starts_with(r#"{"description":"#), "{canonical}");
    assert!(canonical.contains(r#""epsilon":0.5"#), "{canonical}");
    // One character of SQL is another contract.
    let changed = Contract::parse(&toml_text(&k, &SQL.replace("COUNT(*)", "COUNT(1)"))).unwrap();
    assert_ne!(changed.digest(), a.digest());
}

/// JSON text with every object's members in reverse order.
fn reversed_members(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let members: Vec<String> = m
                .iter()
                .rev()
                .map(|(k, v)| {
                    format!(
                        "{}:{}",
                        serde_json::to_string(k).unwrap(),
                        reversed_members(v)
                    )
                })
                .collect();
            format!("{{{}}}", members.join(","))
        }
        serde_json::Value::Array(a) => {
            format!(
                "[{}]",
                a.iter().map(reversed_members).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

#[test]
fn a_contract_that_cannot_be_run_or_approved_is_refused_with_the_field() {
    let k = keys();
    let good = toml_text(&k, SQL);
    for (from, to, needle) in [
        ("format = 1", "format = 2", "format 2 is not supported"),
        (
            "name = \"partner-demographics\"",
            "name = \"Partner\"",
            "name \"Partner\"",
        ),
        (
            "provider = \"fabrikam\"",
            "provider = \"woodgrove\"",
            "is not a data provider",
        ),
        (
            "provider = \"fabrikam\"",
            "provider = \"tailspin\"",
            "is not a party",
        ),
        (
            "type = \"uint8\"",
            "type = \"varchar\"",
            "has type \"varchar\"",
        ),
        (
            "decimal(12,2)",
            "decimal(40,2)",
            "has type \"decimal(40,2)\"",
        ),
        ("k = 10", "k = 0", "output.k must be at least 1"),
        ("k = 10", "k = 9007199254740992", "at most 9007199254740991"),
        (
            "forbidden_columns = [\"name\", \"phone\"]",
            "forbidden_columns = [\"snn\"]",
            "\"snn\" is no input's column",
        ),
        ("id = \"contoso\"", "id = \"con\\u0000toso\"", "U+0000"),
        (
            "display_name = \"Contoso\"",
            "display_name = \"Con\\u202Etoso\"",
            "U+202E",
        ),
        (
            "description = \"Where",
            "description = \"\\u001b[2JWhere",
            "U+001B",
        ),
        (
            "epsilon = 0.5",
            "epsilon = -1.0",
            "must be a finite number above 0",
        ),
        (
            "mechanism = \"laplace\"",
            "mechanism = \"gaussian\"",
            "needs 0 < delta < 1",
        ),
        (
            "epsilon = 0.5 }",
            "epsilon = 0.5, delta = 1.0 }",
            "needs 0 <= delta < 1",
        ),
        (
            "epsilon = 0.5 }",
            "epsilon = 0.5, bounds = { country = [0, 1] } }",
            "column \"country\" is string, not a number",
        ),
        (
            "epsilon = 0.5 }",
            "epsilon = 0.5, bounds = { income = [0, 1] } }",
            "\"income\" is no input's column",
        ),
        (
            "epsilon = 0.5 }",
            "epsilon = 0.5, bounds = { salary = [10, 1] } }",
            "must be two finite numbers, the lower first",
        ),
        (
            "roles = [\"analyst\", \"result-receiver\"]",
            "roles = [\"result-receiver\"]",
            "no party is the analyst",
        ),
        (
            "roles = [\"analyst\", \"result-receiver\"]",
            "roles = [\"analyst\"]",
            "no party receives the results",
        ),
        (
            "key = \"https://contoso-vault.example:8443/keys/contoso-data\"",
            "key = \"contoso-data\"",
            "is not a vault key id",
        ),
        (
            "table = \"fabrikam\"",
            "table = \"contoso\"",
            "table \"contoso\" is listed twice",
        ),
        (
            "aggregate_only = true",
            "aggregate_only = true\nmax_rows = 5",
            "unknown field `max_rows`",
        ),
    ] {
        assert!(good.contains(from), "{from}");
        let err = Contract::parse(&good.replacen(from, to, 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{from} -> {to}: {err}");
    }
    // A provider without an approval key cannot approve.
    let no_key = good.replacen(
        &format!("approval_key = \"\"\"{}\"\"\"", k.fabrikam.1),
        "",
        1,
    );
    let err = Contract::parse(&no_key).unwrap_err().to_string();
    assert!(err.contains("needs an approval_key"), "{err}");
    let garbage = good.replacen(
        &k.fabrikam.1,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        1,
    );
    let err = Contract::parse(&garbage).unwrap_err().to_string();
    assert!(
        err.contains("party \"fabrikam\": approval_key: not a SubjectPublicKeyInfo"),
        "{err}"
    );
    // A real key of another kind (RSA) is not an approval key.
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let rsa_pem = der::pem::encode_string(
        "PUBLIC KEY",
        der::pem::LineEnding::LF,
        &conclave_pki::x509::rsa_spki_der(&rsa),
    )
    .unwrap();
    let err = Contract::parse(&good.replacen(&k.fabrikam.1, &rsa_pem, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("an ECDSA P-256 public key is needed"), "{err}");
    // Nor a receiver key: results are sealed with HPKE over P-256.
    let receiver = format!("receiver_key = \"\"\"{}\"\"\"", k.contoso.1);
    assert!(good.contains(&receiver));
    let err = Contract::parse(&good.replacen(
        &receiver,
        &format!("receiver_key = \"\"\"{rsa_pem}\"\"\""),
        1,
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("receiver_key") && err.contains("DHKEM(P-256)"),
        "{err}"
    );
    // One key for two parties: refused (each approves with its own).
    let err = Contract::parse(&good.replacen(&k.fabrikam.1, &k.contoso.1, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is another party's too"), "{err}");
}

#[test]
fn approvals_verify_offline_against_the_contract() {
    let k = keys();
    let contract = Contract::parse(&toml_text(&k, SQL)).unwrap();
    let contoso = approval::sign(&contract, "contoso", &k.contoso.0, 1_700_000_000).unwrap();
    let fabrikam = approval::sign(&contract, "fabrikam", &k.fabrikam.0, 1_700_000_000).unwrap();
    let a = approval::verify(&contract, &contoso).unwrap();
    assert_eq!(
        (a.party.as_str(), a.digest.clone()),
        ("contoso", contract.digest())
    );

    let status = ApprovalStatus::of(&contract, std::slice::from_ref(&contoso));
    assert_eq!(status.missing, vec!["fabrikam".to_string()]);
    assert!(!status.complete());
    let status = ApprovalStatus::of(&contract, &[contoso.clone(), fabrikam.clone()]);
    assert!(status.complete(), "{status:?}");

    // Signed with another party's key, or by a party that provides nothing: refused.
    assert!(matches!(
        approval::sign(&contract, "contoso", &k.fabrikam.0, 0),
        Err(ApprovalError::Key(m)) if m.contains("not \"contoso\"'s approval key")
    ));
    assert!(matches!(
        approval::sign(&contract, "woodgrove", &k.contoso.0, 0),
        Err(ApprovalError::NotAProvider { .. })
    ));
    // A payload changed after signing does not verify.
    let parts: Vec<&str> = contoso.split('.').collect();
    let forged_payload = conclave_protocol::b64::b64url(
        json!({"contract": contract.name, "digest": contract.digest(), "party": "fabrikam", "iat": 1})
            .to_string()
            .as_bytes(),
    );
    let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert!(matches!(
        approval::verify(&contract, &forged),
        Err(ApprovalError::Signature { party }) if party == "fabrikam"
    ));
    // An approval of the contract before one character of its SQL changed does not carry over.
    let changed = Contract::parse(&toml_text(&k, &SQL.replace("country", "country "))).unwrap();
    let err = approval::verify(&changed, &contoso).unwrap_err();
    assert!(matches!(err, ApprovalError::OtherContract { .. }), "{err}");
    assert!(err.to_string().contains(&contract.digest()), "{err}");
    let status = ApprovalStatus::of(&changed, &[contoso, fabrikam]);
    assert_eq!(status.invalid.len(), 2);
    assert_eq!(status.missing.len(), 2);
    for bad in ["", "a.b", "a.b.c", "e30.e30.AA"] {
        assert!(
            matches!(
                approval::verify(&contract, bad),
                Err(ApprovalError::Malformed(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn an_owners_policy_pins_the_digest_its_k_floor_and_its_epsilon_ceiling() {
    let k = keys();
    let contract = Contract::parse(&toml_text(&k, SQL)).unwrap();
    let authority = "https://attest.example";
    let base = ReleasePolicy::for_authority(
        authority,
        vec![Condition::equals("x-ms-sevsnpvm-launchmeasurement", "ab")],
    );
    let terms = OwnerTerms {
        digest: contract.digest(),
        min_k: 10,
        max_epsilon: Some(1.0),
    };
    let policy = terms.add_to(&base);
    // It round-trips through the grammar the vault parses.
    let reparsed = ReleasePolicy::parse(policy.to_json().to_string().as_bytes()).unwrap();
    assert_eq!(reparsed, policy);
    let token = |claims: &policy::ContractClaims| {
        json!({
            "x-ms-sevsnpvm-launchmeasurement": "ab",
            "x-ms-runtime": {"keys": [], "contract": claims},
        })
    };
    let claims = contract.claims();
    assert_eq!(claims.epsilon, Some(0.5));
    policy.evaluate(authority, &token(&claims)).unwrap();
    for (changed, needle) in [
        (
            policy::ContractClaims {
                digest: "00".repeat(32),
                ..claims.clone()
            },
            "x-ms-runtime.contract.digest",
        ),
        (
            policy::ContractClaims {
                k: 5,
                ..claims.clone()
            },
            "x-ms-runtime.contract.k",
        ),
        (
            policy::ContractClaims {
                epsilon: Some(2.0),
                ..claims.clone()
            },
            "x-ms-runtime.contract.epsilon",
        ),
        (
            policy::ContractClaims {
                epsilon: None,
                delta: None,
                ..claims.clone()
            },
            "x-ms-runtime.contract.epsilon",
        ),
    ] {
        let err = policy.evaluate(authority, &token(&changed)).unwrap_err();
        assert!(err.contains(needle), "{err}");
    }
    // Without the contract claim at all (a workload that runs no contract): refused.
    let err = policy
        .evaluate(authority, &json!({"x-ms-sevsnpvm-launchmeasurement": "ab"}))
        .unwrap_err();
    assert!(err.contains("x-ms-runtime.contract.digest"), "{err}");
}
