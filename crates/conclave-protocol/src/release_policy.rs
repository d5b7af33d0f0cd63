//! Release policies in Azure Key Vault's secure key release grammar:
//!
//! ```json
//! {"version": "1.0.0",
//!  "anyOf": [{"authority": "https://attest.example",
//!             "allOf": [{"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
//!                       {"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-cvm"},
//!                       {"anyOf": [{"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": "…"}]}]}]}
//! ```
//!
//! A policy is satisfied when, for some authority block whose `authority` is the token's
//! issuer, its condition holds. Claim names are dot-paths into nested claims. Versions `0.2`,
//! `1.0` and `1.0.0` share this grammar. Operators and how values compare, as Azure Key Vault
//! evaluates them (secure key release policy grammar, learn.microsoft.com/azure/key-vault/keys/
//! policy-grammar; Microsoft's SKR tooling writes every value as a string, e.g.
//! `{"claim": "x-ms-sevsnpvm-is-debuggable", "equals": "false"}`, and Key Vault releases
//! against the boolean claim):
//!
//! - `equals`, `notEquals`: two strings compare ASCII-case-insensitively; a boolean compares
//!   with a boolean or with the string `"true"`/`"false"` (any case); a number compares
//!   numerically with a number or a string holding one (`"0"`, `"0.0"` and `0` are equal).
//!   Values that cannot be compared that way (the string `"yes"` against a boolean, `"x"`
//!   against a number, an object or array claim against anything) satisfy NEITHER operator:
//!   `notEquals` holds only for comparable values that differ, so a claim of an unexpected type
//!   never satisfies a policy by being "not equal". An absent claim satisfies neither.
//! - `less`, `lessOrEquals`, `greater`, `greaterOrEquals`: the claim must be a number; the
//!   policy's value is a number or a string holding one (`"2"`); anything else fails.
//! - `exists`: `true` (the claim is present) or `false` (absent), as a boolean or as the string
//!   `"true"`/`"false"`.

use serde_json::Value;

/// Deepest nesting of anyOf/allOf accepted (a defence against pathological policies).
pub const MAX_DEPTH: usize = 16;

/// A parsed release policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleasePolicy {
    pub version: String,
    pub authorities: Vec<AuthorityBlock>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthorityBlock {
    pub authority: String,
    pub condition: Condition,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    AllOf(Vec<Condition>),
    AnyOf(Vec<Condition>),
    Claim {
        claim: String,
        op: Operator,
        value: Value,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    Less,
    LessOrEquals,
    Greater,
    GreaterOrEquals,
    Exists,
}

impl Operator {
    const ALL: [(&'static str, Operator); 7] = [
        ("equals", Operator::Equals),
        ("notEquals", Operator::NotEquals),
        ("less", Operator::Less),
        ("lessOrEquals", Operator::LessOrEquals),
        ("greater", Operator::Greater),
        ("greaterOrEquals", Operator::GreaterOrEquals),
        ("exists", Operator::Exists),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, o)| *o == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

impl ReleasePolicy {
    /// A policy of version `1.0.0` releasing to tokens of `authority` whose claims satisfy
    /// every condition in `all_of`.
    pub fn for_authority(authority: &str, all_of: Vec<Condition>) -> Self {
        ReleasePolicy {
            version: "1.0.0".into(),
            authorities: vec![AuthorityBlock {
                authority: authority.to_string(),
                condition: Condition::AllOf(all_of),
            }],
        }
    }

    /// The policy as Azure's grammar writes it (`{"version", "anyOf": [{"authority", "allOf" |
    /// "anyOf" | claim condition}]}`); [`ReleasePolicy::parse`] reads it back to an equal policy.
    pub fn to_json(&self) -> Value {
        let blocks: Vec<Value> = self
            .authorities
            .iter()
            .map(|b| {
                let mut block = b.condition.to_json();
                block
                    .as_object_mut()
                    .expect("a condition is an object")
                    .insert("authority".into(), b.authority.clone().into());
                block
            })
            .collect();
        serde_json::json!({ "version": self.version, "anyOf": blocks })
    }

    /// The policy as a key's `release_policy` (`application/json`, base64url `data`).
    pub fn to_body(&self, immutable: bool) -> crate::vault::ReleasePolicyBody {
        crate::vault::ReleasePolicyBody {
            content_type: Some("application/json; charset=utf-8".into()),
            data: Some(crate::b64::b64url(self.to_json().to_string().as_bytes())),
            immutable: Some(immutable),
        }
    }
}

impl Condition {
    /// `{"claim": claim, "equals": value}`.
    pub fn equals(claim: &str, value: impl Into<Value>) -> Self {
        Condition::Claim {
            claim: claim.to_string(),
            op: Operator::Equals,
            value: value.into(),
        }
    }

    fn to_json(&self) -> Value {
        let list = |cs: &[Condition]| Value::Array(cs.iter().map(Condition::to_json).collect());
        match self {
            Condition::AllOf(cs) => serde_json::json!({ "allOf": list(cs) }),
            Condition::AnyOf(cs) => serde_json::json!({ "anyOf": list(cs) }),
            Condition::Claim { claim, op, value } => {
                let mut m = serde_json::Map::new();
                m.insert("claim".into(), claim.clone().into());
                m.insert(op.name().into(), value.clone());
                Value::Object(m)
            }
        }
    }
}

/// Why a policy document is not a valid policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid release policy: {0}")]
pub struct PolicyError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, PolicyError> {
    Err(PolicyError(msg.into()))
}

/// Looks up a key case-insensitively (Azure accepts `anyOf`, `anyof`, `AnyOf`).
fn get_ci<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

impl ReleasePolicy {
    pub fn parse(bytes: &[u8]) -> Result<Self, PolicyError> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| PolicyError(format!("not JSON: {e}")))?;
        Self::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Result<Self, PolicyError> {
        let Some(obj) = v.as_object() else {
            return err("the policy must be a JSON object");
        };
        let version = match get_ci(obj, "version") {
            Some(Value::String(s)) if matches!(s.as_str(), "0.2" | "1.0" | "1.0.0") => s.clone(),
            Some(other) => return err(format!("unsupported version {other}; use \"1.0.0\"")),
            None => return err("missing \"version\""),
        };
        let Some(Value::Array(blocks)) = get_ci(obj, "anyOf") else {
            return err("the top level must have \"anyOf\": [authority blocks]");
        };
        if blocks.is_empty() {
            return err("\"anyOf\" lists no authority");
        }
        let authorities = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let Some(b) = b.as_object() else {
                    return err(format!("anyOf[{i}] is not an object"));
                };
                let Some(Value::String(authority)) = get_ci(b, "authority") else {
                    return err(format!("anyOf[{i}] has no \"authority\" string"));
                };
                let condition = match (get_ci(b, "allOf"), get_ci(b, "anyOf")) {
                    (Some(all), None) => Condition::AllOf(parse_list(all, 1)?),
                    (None, Some(any)) => Condition::AnyOf(parse_list(any, 1)?),
                    _ => {
                        return err(format!(
                            "anyOf[{i}] (authority {authority}) needs exactly one of \"allOf\" or \"anyOf\""
                        ));
                    }
                };
                Ok(AuthorityBlock {
                    authority: authority.trim_end_matches('/').to_string(),
                    condition,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ReleasePolicy {
            version,
            authorities,
        })
    }

    /// Evaluates against verified claims from `issuer`. `Err` names why it is not satisfied.
    pub fn evaluate(&self, issuer: &str, claims: &Value) -> Result<(), String> {
        let issuer = issuer.trim_end_matches('/');
        let matching: Vec<_> = self
            .authorities
            .iter()
            .filter(|b| b.authority.eq_ignore_ascii_case(issuer))
            .collect();
        if matching.is_empty() {
            let known: Vec<_> = self
                .authorities
                .iter()
                .map(|b| b.authority.as_str())
                .collect();
            return Err(format!(
                "the token's issuer {issuer} is not an authority of this policy (authorities: {})",
                known.join(", ")
            ));
        }
        let mut reasons = Vec::new();
        for block in matching {
            match block.condition.evaluate(claims) {
                Ok(()) => return Ok(()),
                Err(r) => reasons.push(r),
            }
        }
        Err(reasons.join("; or "))
    }
}

fn parse_list(v: &Value, depth: usize) -> Result<Vec<Condition>, PolicyError> {
    if depth > MAX_DEPTH {
        return err(format!("conditions nest deeper than {MAX_DEPTH} levels"));
    }
    let Value::Array(items) = v else {
        return err("allOf/anyOf must be an array of conditions");
    };
    if items.is_empty() {
        return err("allOf/anyOf lists no condition");
    }
    items.iter().map(|c| parse_condition(c, depth)).collect()
}

fn parse_condition(v: &Value, depth: usize) -> Result<Condition, PolicyError> {
    let Some(obj) = v.as_object() else {
        return err(format!("condition {v} is not an object"));
    };
    if let Some(all) = get_ci(obj, "allOf") {
        return Ok(Condition::AllOf(parse_list(all, depth + 1)?));
    }
    if let Some(any) = get_ci(obj, "anyOf") {
        return Ok(Condition::AnyOf(parse_list(any, depth + 1)?));
    }
    let Some(Value::String(claim)) = get_ci(obj, "claim") else {
        return err(format!(
            "condition {v} has no \"claim\", \"allOf\" or \"anyOf\""
        ));
    };
    let ops: Vec<_> = Operator::ALL
        .iter()
        .filter_map(|(name, op)| get_ci(obj, name).map(|val| (*op, val.clone())))
        .collect();
    let [(op, value)] = ops.as_slice() else {
        return err(format!(
            "condition on {claim} needs exactly one operator (equals, notEquals, less, lessOrEquals, greater, greaterOrEquals, exists)"
        ));
    };
    match (op, value) {
        (Operator::Exists, v) if boolean(v).is_some() => {}
        (Operator::Exists, _) => return err(format!("\"exists\" on {claim} takes true or false")),
        (
            Operator::Less | Operator::LessOrEquals | Operator::Greater | Operator::GreaterOrEquals,
            v,
        ) if numeric(v).is_some() => {}
        (
            Operator::Less | Operator::LessOrEquals | Operator::Greater | Operator::GreaterOrEquals,
            _,
        ) => {
            return err(format!(
                "\"{}\" on {claim} takes a number (or a string holding one)",
                op.name()
            ));
        }
        (_, Value::String(_) | Value::Number(_) | Value::Bool(_)) => {}
        _ => {
            return err(format!(
                "the value for {claim} must be a string, number or boolean"
            ));
        }
    }
    Ok(Condition::Claim {
        claim: claim.clone(),
        op: *op,
        value: value.clone(),
    })
}

/// Follows a dot-path into nested claims.
pub fn claim_at<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

fn shown(v: Option<&Value>) -> String {
    match v {
        None => "nothing (claim absent)".into(),
        Some(Value::String(s)) if s.len() > 100 => {
            // Cut at a character boundary: the claim may be any UTF-8 (a workload's runtime
            // data is its own), and slicing inside a character panics.
            let cut = (0..=100)
                .rev()
                .find(|&i| s.is_char_boundary(i))
                .unwrap_or(0);
            format!("\"{}…\"", &s[..cut])
        }
        Some(v) => v.to_string(),
    }
}

/// A number, or a string holding one (`"2"`, `"3.5"`), as f64.
fn numeric(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// A boolean, or a string that says one (`"true"`, `"False"`).
fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Whether `claim` equals `value`, or `None` when the two cannot be compared (see the module
/// documentation): then neither `equals` nor `notEquals` holds, so a value of an unexpected type
/// never satisfies a policy by being "not equal".
fn values_equal(claim: &Value, value: &Value) -> Option<bool> {
    match (claim, value) {
        (Value::String(x), Value::String(y)) => Some(x.eq_ignore_ascii_case(y)),
        (Value::Bool(_), _) | (_, Value::Bool(_)) => Some(boolean(claim)? == boolean(value)?),
        (Value::Number(_), Value::Number(_) | Value::String(_))
        | (Value::String(_), Value::Number(_)) => Some(numeric(claim)? == numeric(value)?),
        _ => None,
    }
}

impl Condition {
    fn evaluate(&self, claims: &Value) -> Result<(), String> {
        match self {
            Condition::AllOf(cs) => cs.iter().try_for_each(|c| c.evaluate(claims)),
            Condition::AnyOf(cs) => {
                let mut reasons = Vec::new();
                for c in cs {
                    match c.evaluate(claims) {
                        Ok(()) => return Ok(()),
                        Err(r) => reasons.push(r),
                    }
                }
                Err(format!("none of: [{}]", reasons.join("; ")))
            }
            Condition::Claim { claim, op, value } => {
                let found = claim_at(claims, claim);
                let ok = match op {
                    Operator::Exists => found.is_some() == boolean(value).unwrap_or(true),
                    Operator::Equals => found.and_then(|f| values_equal(f, value)) == Some(true),
                    Operator::NotEquals => {
                        found.and_then(|f| values_equal(f, value)) == Some(false)
                    }
                    // The claim must be a number; the policy's value may be written as a string.
                    _ => match (found.and_then(Value::as_f64), numeric(value)) {
                        (Some(f), Some(v)) => match op {
                            Operator::Less => f < v,
                            Operator::LessOrEquals => f <= v,
                            Operator::Greater => f > v,
                            Operator::GreaterOrEquals => f >= v,
                            _ => unreachable!("handled above"),
                        },
                        _ => false,
                    },
                };
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "claim {claim} {} {value} failed: found {}",
                        op.name(),
                        shown(found)
                    ))
                }
            }
        }
    }

    /// Every claim path a policy mentions (for explanations in the UI).
    pub fn claims(&self) -> Vec<&str> {
        match self {
            Condition::AllOf(cs) | Condition::AnyOf(cs) => {
                cs.iter().flat_map(|c| c.claims()).collect()
            }
            Condition::Claim { claim, .. } => vec![claim.as_str()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const AUTH: &str = "https://attest.example";

    fn policy(v: Value) -> ReleasePolicy {
        ReleasePolicy::from_value(&v).unwrap()
    }

    fn claims() -> Value {
        json!({
            "x-ms-attestation-type": "sevsnpvm",
            "x-ms-sevsnpvm-launchmeasurement": "ABCDEF",
            "x-ms-sevsnpvm-is-debuggable": false,
            "x-ms-sevsnpvm-snpfw-svn": 23,
            "x-ms-isolation-tee": {"x-ms-compliance-status": "azure-compliant-cvm"},
            "x-ms-runtime": {"vm-configuration": {"vmUniqueId": "vm-1"}}
        })
    }

    #[test]
    fn values_written_as_strings_match_boolean_and_number_claims_as_azure_evaluates_them() {
        let claims = json!({
            "x-ms-sevsnpvm-is-debuggable": false,
            "x-ms-sevsnpvm-vmpl": 0,
            "x-ms-sevsnpvm-guestsvn": 3,
            "svn-text": "7",
            "ratio": 2.5,
        });
        let holds = |claim: &str, op: &str, value: Value| {
            policy(json!({"version": "1.0.0", "anyOf": [{"authority": AUTH,
                "allOf": [{"claim": claim, op: value}]}]}))
            .evaluate(AUTH, &claims)
            .is_ok()
        };
        // Microsoft's SKR tooling: {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": "false"}.
        assert!(holds(
            "x-ms-sevsnpvm-is-debuggable",
            "equals",
            json!("false")
        ));
        assert!(holds(
            "x-ms-sevsnpvm-is-debuggable",
            "equals",
            json!("False")
        ));
        assert!(!holds(
            "x-ms-sevsnpvm-is-debuggable",
            "equals",
            json!("true")
        ));
        assert!(holds(
            "x-ms-sevsnpvm-is-debuggable",
            "notEquals",
            json!("true")
        ));
        assert!(!holds(
            "x-ms-sevsnpvm-is-debuggable",
            "notEquals",
            json!("false")
        ));
        assert!(holds("x-ms-sevsnpvm-vmpl", "equals", json!("0")));
        assert!(!holds("x-ms-sevsnpvm-vmpl", "equals", json!("1")));
        assert!(holds("x-ms-sevsnpvm-vmpl", "notEquals", json!("1")));
        assert!(holds("ratio", "equals", json!("2.5")));
        assert!(holds("svn-text", "equals", json!(7)));
        assert!(holds("x-ms-sevsnpvm-vmpl", "equals", json!("0.0")));
        // Ordering operators take numeric strings, on either side.
        for (op, value, expect) in [
            ("greaterOrEquals", "3", true),
            ("greaterOrEquals", "4", false),
            ("greater", "2", true),
            ("less", "3", false),
            ("lessOrEquals", "3", true),
        ] {
            assert_eq!(
                holds("x-ms-sevsnpvm-guestsvn", op, json!(value)),
                expect,
                "{op} {value}"
            );
        }
        // The claim side of an ordering must be a number: a string claim (a version, say) fails.
        assert!(!holds("svn-text", "greater", json!(6)));
        // Values that cannot be compared satisfy neither equals nor notEquals (fail closed).
        for (claim, value) in [
            ("x-ms-sevsnpvm-is-debuggable", json!("yes")),
            ("x-ms-sevsnpvm-is-debuggable", json!(1)),
            ("x-ms-sevsnpvm-vmpl", json!("zero")),
            ("x-ms-sevsnpvm-vmpl", json!(false)),
        ] {
            assert!(
                !holds(claim, "equals", value.clone()),
                "{claim} equals {value}"
            );
            assert!(
                !holds(claim, "notEquals", value.clone()),
                "{claim} notEquals {value}"
            );
        }
        assert!(holds("x-ms-sevsnpvm-vmpl", "exists", json!("true")));
        assert!(!holds("x-ms-sevsnpvm-vmpl", "exists", json!("false")));
        // A string that holds no number is not an ordering value.
        assert!(
            ReleasePolicy::from_value(&json!({"version": "1.0.0", "anyOf": [{"authority": AUTH,
                "allOf": [{"claim": "x", "less": "three"}]}]}))
            .unwrap_err()
            .to_string()
            .contains("takes a number (or a string holding one)")
        );
    }

    #[test]
    fn a_long_non_ascii_claim_in_a_refusal_is_cut_at_a_character_boundary() {
        // Found by the release-policy-structured fuzz target: byte 100 fell inside "é".
        let p = policy(json!({"version": "1.0.0", "anyOf": [{"authority": AUTH,
            "allOf": [{"claim": "x-ms-runtime.note", "equals": "x"}]}]}));
        let note = format!("a{}", "é".repeat(80));
        let reason = p
            .evaluate(AUTH, &json!({"x-ms-runtime": {"note": note}}))
            .unwrap_err();
        assert!(
            reason.contains(&format!("\"a{}…\"", "é".repeat(49))),
            "{reason}"
        );
    }

    #[test]
    fn a_policy_written_out_parses_back_to_itself() {
        for text in [
            json!({"version": "1.0.0", "anyOf": [{"authority": AUTH, "allOf": [
                {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false},
                {"anyOf": [{"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": "ab"},
                           {"claim": "x-ms-sevsnpvm-guestsvn", "greaterOrEquals": 2}]}]}]}),
            json!({"version": "0.2", "anyOf": [{"authority": AUTH,
                "anyOf": [{"claim": "x-ms-runtime.keys", "exists": true}]}]}),
        ] {
            let p = policy(text);
            assert_eq!(
                ReleasePolicy::parse(p.to_json().to_string().as_bytes()).unwrap(),
                p
            );
        }
        let built = ReleasePolicy::for_authority(
            AUTH,
            vec![Condition::equals("x-ms-sevsnpvm-hostdata", "00ff")],
        );
        assert_eq!(
            built.to_json(),
            json!({"version": "1.0.0", "anyOf": [{"authority": AUTH, "allOf": [
                {"claim": "x-ms-sevsnpvm-hostdata", "equals": "00ff"}]}]})
        );
    }

    #[test]
    fn nested_any_and_all_with_dot_paths() {
        let p = policy(
            json!({"version": "1.0.0", "anyOf": [{"authority": AUTH, "allOf": [
                {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
                {"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-cvm"},
                {"claim": "x-ms-runtime.vm-configuration.vmUniqueId", "equals": "vm-1"},
                {"anyOf": [
                    {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": "000000"},
                    {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": "abcdef"}
                ]},
                {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false},
                {"claim": "x-ms-sevsnpvm-snpfw-svn", "greaterOrEquals": 20},
                {"claim": "x-ms-sevsnpvm-snpfw-svn", "less": 24},
                {"claim": "x-ms-runtime", "exists": true},
                {"claim": "x-ms-nothing", "exists": false},
                {"claim": "x-ms-attestation-type", "notEquals": "sgx"}
            ]}]}),
        );
        p.evaluate(AUTH, &claims()).unwrap();
        p.evaluate(&format!("{AUTH}/"), &claims()).unwrap();
    }

    #[test]
    fn failures_name_the_claim_expected_and_found() {
        let p = policy(
            json!({"version": "1.0.0", "anyOf": [{"authority": AUTH, "allOf": [
                {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": "112233"}
            ]}]}),
        );
        let e = p.evaluate(AUTH, &claims()).unwrap_err();
        assert!(e.contains("x-ms-sevsnpvm-launchmeasurement"), "{e}");
        assert!(e.contains("112233") && e.contains("ABCDEF"), "{e}");

        let absent = policy(
            json!({"version": "1.0.0", "anyOf": [{"authority": AUTH, "allOf": [
            {"claim": "x-ms-sevsnpvm-hostdata", "equals": "aa"}]}]}),
        );
        assert!(
            absent
                .evaluate(AUTH, &claims())
                .unwrap_err()
                .contains("claim absent")
        );
    }

    #[test]
    fn issuer_must_be_an_authority_of_the_policy() {
        let p = policy(
            json!({"version": "1.0.0", "anyOf": [{"authority": AUTH, "allOf": [
            {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"}]}]}),
        );
        let e = p.evaluate("https://evil.example", &claims()).unwrap_err();
        assert!(e.contains("not an authority"), "{e}");
    }

    #[test]
    fn values_of_another_type_match_only_by_their_canonical_text() {
        // (The string "false" does equal the boolean false: Azure's semantics, tested above.)
        for text in ["no", "0", "", "false "] {
            let p = policy(
                json!({"version": "1.0", "anyOf": [{"authority": AUTH, "allOf": [
                {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": text}]}]}),
            );
            let holds = p.evaluate(AUTH, &claims()).is_ok();
            assert!(!holds, "{text:?} against the boolean false");
        }
        let p = policy(
            json!({"version": "1.0", "anyOf": [{"authority": AUTH, "allOf": [
            {"claim": "x-ms-isolation-tee", "equals": "azure-compliant-cvm"}]}]}),
        );
        assert!(
            p.evaluate(AUTH, &claims()).is_err(),
            "an object is not a string"
        );
        let p = policy(
            json!({"version": "0.2", "anyOf": [{"authority": AUTH, "allOf": [
            {"claim": "x-ms-attestation-type", "greater": 1}]}]}),
        );
        assert!(p.evaluate(AUTH, &claims()).is_err());
    }

    #[test]
    fn malformed_policies_are_rejected_with_reasons() {
        for (bad, why) in [
            (json!([]), "JSON object"),
            (json!({"anyOf": []}), "version"),
            (
                json!({"version": "2.0", "anyOf": []}),
                "unsupported version",
            ),
            (json!({"version": "1.0.0", "anyOf": []}), "no authority"),
            (
                json!({"version": "1.0.0", "anyOf": [{"allOf": []}]}),
                "authority",
            ),
            (
                json!({"version": "1.0.0", "anyOf": [{"authority": AUTH}]}),
                "exactly one",
            ),
            (
                json!({"version": "1.0.0", "anyOf": [{"authority": AUTH, "allOf": [{"claim": "a"}]}]}),
                "exactly one operator",
            ),
            (
                json!({"version": "1.0.0", "anyOf": [{"authority": AUTH, "allOf": [{"claim": "a", "equals": 1, "less": 2}]}]}),
                "exactly one operator",
            ),
            (
                json!({"version": "1.0.0", "anyOf": [{"authority": AUTH, "allOf": [{"claim": "a", "less": "x"}]}]}),
                "takes a number",
            ),
            (
                json!({"version": "1.0.0", "anyOf": [{"authority": AUTH, "allOf": [{"claim": "a", "equals": {"x": 1}}]}]}),
                "string, number or boolean",
            ),
        ] {
            let e = ReleasePolicy::from_value(&bad).unwrap_err();
            assert!(e.0.contains(why), "{bad}: {e}");
        }
        let mut deep = json!({"claim": "a", "equals": 1});
        for _ in 0..(MAX_DEPTH + 2) {
            deep = json!({"anyOf": [deep]});
        }
        let p = json!({"version": "1.0.0", "anyOf": [{"authority": AUTH, "allOf": [deep]}]});
        assert!(
            ReleasePolicy::from_value(&p)
                .unwrap_err()
                .0
                .contains("deeper")
        );
    }
}
