//! The audit log: every create, policy change, grant, revoke and release attempt, appended in
//! the same transaction as the change it records. Entries form a chain: each carries
//! `mac = HMAC(audit key, seq ‖ prev mac ‖ event)`, with the audit key derived from the vault's
//! master key, so an edited, dropped, inserted or reordered entry breaks every MAC after it, and
//! nobody without the master key can forge a consistent chain. (Cutting entries off the end is
//! detected by comparing the head with a copy kept elsewhere: `conclave audit show` prints it.)

use aws_lc_rs::hmac;

pub use conclave_protocol::vault::{AuditEntry, AuditEvent};

/// The chain MAC of an entry.
pub fn chain_mac(key: &hmac::Key, seq: u64, prev: &str, event: &AuditEvent) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(&seq.to_be_bytes());
    ctx.update(prev.as_bytes());
    ctx.update(&serde_json::to_vec(event).expect("event serialises"));
    hex::encode(ctx.sign().as_ref())
}

/// Why a log does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error(
        "entry {found} is where entry {expected} should be: an entry was dropped, inserted or reordered"
    )]
    Sequence { expected: u64, found: u64 },
    #[error("entry {0} does not follow its predecessor: the chain was cut or reordered here")]
    Broken(u64),
    #[error("entry {0} was altered (its MAC does not match)")]
    Altered(u64),
    #[error(
        "the log ends at entry {last:?} but the recorded head is entry {head}: entries were cut off the end"
    )]
    Truncated { last: Option<u64>, head: u64 },
}

/// Verifies a whole log (from entry 0), and that it ends at `head` when given.
pub fn verify(
    key: &hmac::Key,
    entries: &[AuditEntry],
    head: Option<(u64, &str)>,
) -> Result<(), AuditError> {
    let mut prev = "0".repeat(64);
    for (i, e) in entries.iter().enumerate() {
        let expected = i as u64;
        if e.seq != expected {
            return Err(AuditError::Sequence {
                expected,
                found: e.seq,
            });
        }
        if e.prev != prev {
            return Err(AuditError::Broken(e.seq));
        }
        if chain_mac(key, e.seq, &e.prev, &e.event) != e.mac {
            return Err(AuditError::Altered(e.seq));
        }
        prev = e.mac.clone();
    }
    if let Some((head_seq, head_mac)) = head {
        let last = entries.last();
        if last.map(|e| (e.seq, e.mac.as_str())) != Some((head_seq, head_mac)) {
            return Err(AuditError::Truncated {
                last: last.map(|e| e.seq),
                head: head_seq,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(key: &hmac::Key, n: u64) -> Vec<AuditEntry> {
        let mut prev = "0".repeat(64);
        (0..n)
            .map(|seq| {
                let event = AuditEvent::new("contoso", "release", Some("contoso-key"), "denied")
                    .reason(format!("reason {seq}"));
                let mac = chain_mac(key, seq, &prev, &event);
                let e = AuditEntry {
                    seq,
                    prev: prev.clone(),
                    mac: mac.clone(),
                    event,
                };
                prev = mac;
                e
            })
            .collect()
    }

    #[test]
    fn detects_edits_drops_reorders_and_truncation() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"audit key");
        let log = chain(&key, 5);
        let head = (4, log[4].mac.as_str());
        verify(&key, &log, Some(head)).unwrap();

        let mut edited = log.clone();
        edited[2].event.outcome = "granted".into();
        assert_eq!(verify(&key, &edited, None), Err(AuditError::Altered(2)));

        let mut dropped = log.clone();
        dropped.remove(1);
        assert!(matches!(
            verify(&key, &dropped, None),
            Err(AuditError::Sequence {
                expected: 1,
                found: 2
            })
        ));

        let mut reordered = log.clone();
        reordered.swap(1, 2);
        assert!(verify(&key, &reordered, None).is_err());

        let truncated = &log[..3];
        assert!(matches!(
            verify(&key, truncated, Some(head)),
            Err(AuditError::Truncated { .. })
        ));

        let other_key = hmac::Key::new(hmac::HMAC_SHA256, b"forger");
        assert_eq!(verify(&other_key, &log, None), Err(AuditError::Altered(0)));
    }
}
