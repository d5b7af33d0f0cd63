//! Key rotation policies, in Azure Key Vault's `rotationpolicy` shape (API 7.3+):
//!
//! ```json
//! {"lifetimeActions": [{"trigger": {"timeAfterCreate": "P90D"}, "action": {"type": "Rotate"}}],
//!  "attributes": {"expiryTime": "P2Y"}}
//! ```
//!
//! A `Rotate` action after `timeAfterCreate` makes a new version when the latest is that old;
//! `expiryTime` gives each new version an `exp` that far after its creation. Durations are ISO
//! 8601 (`PnYnMnWnD`; a month counts 30 days and a year 365, as for a schedule of days). Azure's
//! other triggers and its `Notify` action (an Event Grid event) are refused with the reason:
//! Conclave has no event sink, and a policy that silently did nothing would be worse.

use conclave_protocol::vault::{
    KeyRotationPolicy, KeyRotationPolicyAttributes, LifetimeAction, LifetimeActionTrigger,
    LifetimeActionType,
};

/// The shortest rotation period Azure allows.
pub const MIN_ROTATE_AFTER_SECS: u64 = 7 * 86_400;

/// A validated rotation policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Rotate when the latest version is this old (seconds).
    pub rotate_after: Option<u64>,
    /// New versions expire this long after creation (seconds).
    pub expiry: Option<u64>,
    /// The ISO 8601 texts, as given.
    pub rotate_after_text: Option<String>,
    pub expiry_text: Option<String>,
}

/// Parses an ISO 8601 duration of whole years, months, weeks and days (`P90D`, `P1Y6M`, `P2W`)
/// into seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("{text:?} is not an ISO 8601 duration of days, weeks, months or years (e.g. P90D)")
    };
    let rest = text.strip_prefix('P').ok_or_else(bad)?;
    if rest.is_empty() || rest.contains('T') {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in rest.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let days = match c {
            'Y' => 365,
            'M' => 30,
            'W' => 7,
            'D' => 1,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(days * 86_400)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(total)
}

impl RotationPolicy {
    /// Validates Azure's document. Errors name what is not supported and why.
    pub fn parse(doc: &KeyRotationPolicy) -> Result<Self, String> {
        let mut policy = RotationPolicy {
            rotate_after: None,
            expiry: None,
            rotate_after_text: None,
            expiry_text: None,
        };
        for action in doc.lifetime_actions.iter().flatten() {
            let kind = &action.action.kind;
            if !kind.eq_ignore_ascii_case("rotate") {
                return Err(format!(
                    "lifetime action {kind:?} is not supported: only Rotate (Notify needs an event sink Conclave does not have)"
                ));
            }
            if action.trigger.time_before_expiry.is_some() {
                return Err(
                    "the timeBeforeExpiry trigger is not supported: use timeAfterCreate".into(),
                );
            }
            let text = action
                .trigger
                .time_after_create
                .as_deref()
                .ok_or("a Rotate action needs trigger.timeAfterCreate (e.g. P90D)")?;
            let secs = parse_duration(text)?;
            if secs < MIN_ROTATE_AFTER_SECS {
                return Err(format!(
                    "timeAfterCreate {text} is shorter than 7 days (P7D)"
                ));
            }
            if policy.rotate_after.is_some() {
                return Err("only one Rotate action".into());
            }
            policy.rotate_after = Some(secs);
            policy.rotate_after_text = Some(text.to_string());
        }
        if let Some(text) = &doc.attributes.expiry_time {
            let secs = parse_duration(text)?;
            if policy.rotate_after.is_some_and(|r| r >= secs) {
                return Err(format!(
                    "expiryTime {text} must be longer than the rotation period: versions would expire before the next one exists"
                ));
            }
            policy.expiry = Some(secs);
            policy.expiry_text = Some(text.clone());
        }
        Ok(policy)
    }

    /// The policy as Azure answers it (`created`, `updated`: Unix seconds).
    pub fn to_document(&self, id: &str, created: u64, updated: u64) -> KeyRotationPolicy {
        KeyRotationPolicy {
            id: Some(id.to_string()),
            lifetime_actions: Some(
                self.rotate_after_text
                    .iter()
                    .map(|t| LifetimeAction {
                        trigger: LifetimeActionTrigger {
                            time_after_create: Some(t.clone()),
                            time_before_expiry: None,
                        },
                        action: LifetimeActionType {
                            kind: "Rotate".into(),
                        },
                    })
                    .collect(),
            ),
            attributes: KeyRotationPolicyAttributes {
                expiry_time: self.expiry_text.clone(),
                created: Some(created),
                updated: Some(updated),
            },
        }
    }

    /// Whether a latest version created at `created` is due for rotation at `now`.
    pub fn due(&self, created: u64, now: u64) -> bool {
        self.rotate_after
            .is_some_and(|after| now >= created.saturating_add(after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: serde_json::Value) -> KeyRotationPolicy {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn durations_and_policies() {
        assert_eq!(parse_duration("P90D").unwrap(), 90 * 86_400);
        assert_eq!(parse_duration("P1Y6M").unwrap(), (365 + 180) * 86_400);
        assert_eq!(parse_duration("P2W").unwrap(), 14 * 86_400);
        for bad in [
            "90D",
            "P",
            "PT1H",
            "P1X",
            "P1D2",
            "P0D",
            "P99999999999999999Y",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let p = RotationPolicy::parse(&doc(json!({
            "lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}],
            "attributes": {"expiryTime": "P90D"}
        })))
        .unwrap();
        assert_eq!(p.rotate_after, Some(30 * 86_400));
        assert!(!p.due(1000, 1000 + 29 * 86_400));
        assert!(p.due(1000, 1000 + 30 * 86_400));
        for (d, needle) in [
            (
                json!({"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}]}),
                "Notify",
            ),
            (
                json!({"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Rotate"}}]}),
                "timeBeforeExpiry",
            ),
            (
                json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P1D"}, "action": {"type": "Rotate"}}]}),
                "7 days",
            ),
            (
                json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P90D"}, "action": {"type": "Rotate"}}], "attributes": {"expiryTime": "P30D"}}),
                "longer than the rotation period",
            ),
        ] {
            let e = RotationPolicy::parse(&doc(d)).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
