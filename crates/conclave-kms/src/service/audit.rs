//! The audit log as its readers see it: signed checkpoints, each principal's own entries with
//! inclusion proofs, and what each principal may see.

use super::*;

impl Vault {
    /// The audit log's signed checkpoint now, as a C2SP signed note, with its size.
    pub fn audit_checkpoint(&self) -> VResult<(u64, String)> {
        let (size, root) = self.store.audit_tree_head()?;
        Ok((size, self.log.checkpoint(size, root)))
    }

    /// The verifier key of the audit checkpoints (C2SP signed-note), to publish.
    pub fn audit_verifier_key(&self) -> String {
        self.log.verifier_key()
    }

    /// `GET /audit/proofs`: the entries from `from` that `who` may see (see
    /// [`audit_for`](Self::audit_for)), each with its inclusion proof against a checkpoint
    /// signed now, and with `since` (an earlier checkpoint's size) the consistency proof from it.
    pub(super) fn audit_proofs(
        &self,
        who: &Principal,
        from: u64,
        limit: usize,
        since: Option<u64>,
    ) -> VResult<crate::transparency::AuditBundle> {
        use crate::transparency::{AuditBundle, Consistency, ProvenEntry, encode_hashes};
        let (size, checkpoint) = self.audit_checkpoint()?;
        let consistency = match since {
            Some(old) if old > size => {
                return Err(VaultError::bad(format!(
                    "since={old} is beyond the log's size {size}: that checkpoint is not this log's"
                )));
            }
            Some(old) if old > 0 && old < size => Some(Consistency {
                from_size: old,
                proof: encode_hashes(&self.store.audit_consistency(old, size)?),
            }),
            _ => None,
        };
        let visible = self.audit_visibility(who)?;
        let mut entries = Vec::new();
        for (seq, leaf) in self.store.audit_leaves(from, limit)? {
            if seq >= size {
                break; // appended after the checkpoint
            }
            let entry: crate::audit::AuditEntry = serde_json::from_slice(&leaf)
                .map_err(|_| VaultError::internal(format!("audit entry {seq} is corrupt")))?;
            if visible(&entry) {
                entries.push(ProvenEntry {
                    seq,
                    leaf: base64::engine::general_purpose::STANDARD.encode(&leaf),
                    proof: encode_hashes(&self.store.audit_inclusion(seq, size)?),
                });
            }
        }
        Ok(AuditBundle {
            checkpoint,
            entries,
            consistency,
        })
    }

    /// Which audit entries `who` may see: an admin all; anyone else those it made and those
    /// about the keys it owns, from when it came to own them.
    pub(super) fn audit_visibility(
        &self,
        who: &Principal,
    ) -> VResult<impl Fn(&crate::audit::AuditEntry) -> bool + use<>> {
        // Each owned key with the first entry of its current owner's time (the entries of a
        // purged key of the same name, another owner's, stay hidden).
        let owned: BTreeMap<String, u64> = if who.admin {
            BTreeMap::new()
        } else {
            self.store
                .latest_versions()?
                .into_iter()
                .filter(|r| r.owner == who.name)
                .map(|r| (r.name, r.audit_from.unwrap_or(0)))
                .collect()
        };
        let (admin, name) = (who.admin, who.name.clone());
        Ok(move |e: &crate::audit::AuditEntry| {
            admin
                || e.event.principal == name
                || e.event
                    .key
                    .as_ref()
                    .and_then(|k| owned.get(k))
                    .is_some_and(|from| e.seq >= *from)
        })
    }

    pub(super) fn audit_for(
        &self,
        who: &Principal,
        from: u64,
        limit: usize,
    ) -> VResult<api::AuditPage> {
        let entries = self.store.audit_entries(from, limit)?;
        let visible = self.audit_visibility(who)?;
        let visible: Vec<_> = entries.into_iter().filter(|e| visible(e)).collect();
        Ok(api::AuditPage {
            value: visible,
            head: self.store.audit_head()?,
        })
    }
}
