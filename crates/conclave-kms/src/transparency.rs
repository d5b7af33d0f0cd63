//! An audit log anyone can verify: the vault's audit entries are the leaves of an RFC 6962 /
//! RFC 9162 Merkle tree (the entry's stored JSON bytes, hashed as `SHA-256(0x00 ‖ leaf)`), and
//! the vault signs checkpoints of its head in the C2SP formats that Go's checksum database,
//! Sigstore and the transparency-dev witnesses use:
//!
//! - a checkpoint (<https://c2sp.org/tlog-checkpoint>): `<origin>\n<size>\n<base64 root>\n`;
//! - signed as a note (<https://c2sp.org/signed-note>): the text, a blank line, and
//!   `— <key name> <base64(key hash ‖ Ed25519 signature)>\n`, where the key hash is the first
//!   four bytes of `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)`;
//! - the public key as a verifier key `<name>+<hex key hash>+<base64(0x01 ‖ public key)>`.
//!
//! A party fetches the entries about its own keys with inclusion proofs against a signed
//! checkpoint ([`AuditBundle`]), and a later bundle carries a consistency proof from an earlier
//! checkpoint, so the log it saw can only have grown. Checking needs the vault's verifier key
//! and nothing secret ([`verify_bundle`]). The tree arithmetic is the `tlog_tiles` crate's (a
//! port of Go's `golang.org/x/mod/sumdb/tlog`); the signature is Ed25519 through aws-lc-rs,
//! with a key derived from the vault's master key, so every replica and a recovered vault
//! sign with the same key.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use tlog_tiles::{Checkpoint, Hash};

use crate::audit::AuditEntry;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// The signed-note signature type of Ed25519.
const ALG_ED25519: u8 = 0x01;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransparencyError {
    #[error("the vault key {0:?} is not a signed-note verifier key (<name>+<hash>+<base64 key>)")]
    BadVerifierKey(String),
    #[error("the checkpoint is not a signed note: {0}")]
    MalformedNote(String),
    #[error(
        "the checkpoint carries no valid signature by {0}: it was not signed by this vault's key, or it was changed"
    )]
    BadSignature(String),
    #[error("the checkpoint is malformed (C2SP tlog-checkpoint)")]
    MalformedCheckpoint,
    #[error("the checkpoint is for log {found:?}, not {expected:?}")]
    WrongOrigin { expected: String, found: String },
    #[error(
        "audit entry {seq} is not in the tree the checkpoint signs (its inclusion proof fails)"
    )]
    NotIncluded { seq: u64 },
    #[error(
        "the log of size {new} does not extend the earlier checkpoint of size {old} (the consistency proof fails): the vault rewrote its history or shows different logs to different parties"
    )]
    NotConsistent { old: u64, new: u64 },
    #[error(
        "the earlier checkpoint (size {old}) is larger than this one (size {new}): the log shrank"
    )]
    Shrank { old: u64, new: u64 },
    #[error("the bundle is malformed: {0}")]
    MalformedBundle(String),
}

/// The vault's checkpoint signer: an Ed25519 key named `name` (the log's origin).
pub struct NoteSigner {
    name: String,
    key: Ed25519KeyPair,
    key_hash: [u8; 4],
}

/// The first four bytes of `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)` (C2SP signed-note).
fn key_hash(name: &str, public: &[u8]) -> [u8; 4] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[ALG_ED25519]);
    ctx.update(public);
    let d = ctx.finish();
    d.as_ref()[..4].try_into().expect("4 bytes")
}

/// Whether `name` is a valid key name: non-empty, no whitespace or `+` (C2SP signed-note).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

impl NoteSigner {
    /// An Ed25519 signer from a 32-byte seed (RFC 8032 §5.1.5).
    pub fn from_seed(name: &str, seed: &[u8]) -> Result<Self, TransparencyError> {
        if !valid_name(name) {
            return Err(TransparencyError::BadVerifierKey(name.into()));
        }
        let key = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| TransparencyError::BadVerifierKey(name.into()))?;
        let key_hash = key_hash(name, key.public_key().as_ref());
        Ok(NoteSigner {
            name: name.into(),
            key,
            key_hash,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key to publish: `<name>+<hex key hash>+<base64(0x01 ‖ public key)>`.
    pub fn verifier_key(&self) -> String {
        let mut typed = vec![ALG_ED25519];
        typed.extend_from_slice(self.key.public_key().as_ref());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_hash),
            B64.encode(typed)
        )
    }

    /// `text` (which must end in a newline) signed as a note.
    pub fn sign(&self, text: &str) -> String {
        debug_assert!(text.ends_with('\n'));
        let sig = self.key.sign(text.as_bytes());
        let mut blob = self.key_hash.to_vec();
        blob.extend_from_slice(sig.as_ref());
        format!("{text}\n\u{2014} {} {}\n", self.name, B64.encode(blob))
    }

    /// A signed checkpoint of the tree of `size` leaves with root `root`.
    pub fn checkpoint(&self, size: u64, root: Hash) -> String {
        let cp = Checkpoint::new(&self.name, size, root, "").expect("a valid origin");
        self.sign(std::str::from_utf8(&cp.to_bytes()).expect("ASCII"))
    }
}

/// A parsed verifier key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    key_hash: [u8; 4],
    public: Vec<u8>,
}

impl VerifierKey {
    /// Parses `<name>+<hex key hash>+<base64(0x01 ‖ public key)>`; the hash must match.
    pub fn parse(vkey: &str) -> Result<Self, TransparencyError> {
        let bad = || TransparencyError::BadVerifierKey(vkey.trim().into());
        let vkey = vkey.trim();
        let (name, rest) = vkey.split_once('+').ok_or_else(bad)?;
        let (hash, key) = rest.split_once('+').ok_or_else(bad)?;
        let hash: [u8; 4] = hex::decode(hash)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(bad)?;
        let key = B64.decode(key).map_err(|_| bad())?;
        match key.split_first() {
            Some((&ALG_ED25519, public))
                if public.len() == 32 && valid_name(name) && key_hash(name, public) == hash =>
            {
                Ok(VerifierKey {
                    name: name.into(),
                    key_hash: hash,
                    public: public.to_vec(),
                })
            }
            _ => Err(bad()),
        }
    }

    /// The text of `note` if it carries a valid signature by this key (other signatures, such
    /// as witnesses' cosignatures, are ignored).
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, TransparencyError> {
        let split = note.rfind("\n\n").ok_or_else(|| {
            TransparencyError::MalformedNote("no blank line before the signatures".into())
        })?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        if !sigs.ends_with('\n') || sigs.is_empty() {
            return Err(TransparencyError::MalformedNote(
                "the signature lines must end with a newline".into(),
            ));
        }
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(TransparencyError::MalformedNote(format!(
                    "a signature line must start with an em dash: {line:?}"
                )));
            };
            let Some((name, blob)) = rest.split_once(' ') else {
                return Err(TransparencyError::MalformedNote(format!(
                    "a signature line is `— <name> <base64>`: {line:?}"
                )));
            };
            let Ok(blob) = B64.decode(blob) else {
                return Err(TransparencyError::MalformedNote(format!(
                    "a signature is not base64: {line:?}"
                )));
            };
            if name != self.name || blob.len() != 4 + 64 || blob[..4] != self.key_hash {
                continue;
            }
            if UnparsedPublicKey::new(&ED25519, &self.public)
                .verify(text.as_bytes(), &blob[4..])
                .is_ok()
            {
                return Ok(text);
            }
        }
        Err(TransparencyError::BadSignature(self.name.clone()))
    }

    /// The checkpoint of a signed note, after checking the signature and that the log is this
    /// key's (its origin is the key's name).
    pub fn open_checkpoint(&self, note: &str) -> Result<Checkpoint, TransparencyError> {
        let text = self.open(note)?;
        let cp = Checkpoint::from_bytes(text.as_bytes())
            .map_err(|_| TransparencyError::MalformedCheckpoint)?;
        if cp.origin() != self.name {
            return Err(TransparencyError::WrongOrigin {
                expected: self.name.clone(),
                found: cp.origin().into(),
            });
        }
        Ok(cp)
    }
}

/// The hash of an audit leaf: the entry's stored bytes (RFC 6962 §2.1, `SHA-256(0x00 ‖ leaf)`).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    tlog_tiles::record_hash(leaf)
}

pub use conclave_protocol::vault::{AuditBundle, Consistency, ProvenEntry};

/// What a bundle proves.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedBundle {
    pub size: u64,
    pub root: Hash,
    pub entries: Vec<AuditEntry>,
}

pub fn encode_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h.0)).collect()
}

fn decode_hashes(hashes: &[String]) -> Result<Vec<Hash>, TransparencyError> {
    hashes
        .iter()
        .map(|h| {
            B64.decode(h)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(Hash)
                .ok_or_else(|| {
                    TransparencyError::MalformedBundle(format!(
                        "{h:?} is not a base64 SHA-256 hash"
                    ))
                })
        })
        .collect()
}

/// Checks `bundle` with the vault's verifier key alone: the checkpoint's signature and origin,
/// every entry's inclusion proof against it (and that each leaf is an audit entry whose `seq` is
/// its index), and, given an earlier signed checkpoint of the same log, that the log only grew
/// (the bundle's consistency proof, needed when the sizes differ).
pub fn verify_bundle(
    bundle: &AuditBundle,
    key: &VerifierKey,
    earlier: Option<&str>,
) -> Result<VerifiedBundle, TransparencyError> {
    let cp = key.open_checkpoint(&bundle.checkpoint)?;
    let (size, root) = (cp.size(), *cp.hash());
    let mut entries = Vec::with_capacity(bundle.entries.len());
    for e in &bundle.entries {
        let leaf = B64.decode(&e.leaf).map_err(|_| {
            TransparencyError::MalformedBundle(format!("entry {}: the leaf is not base64", e.seq))
        })?;
        let proof = decode_hashes(&e.proof)?;
        if e.seq >= size
            || tlog_tiles::check_record(&proof, size, root, e.seq, leaf_hash(&leaf)).is_err()
        {
            return Err(TransparencyError::NotIncluded { seq: e.seq });
        }
        let entry: AuditEntry = serde_json::from_slice(&leaf).map_err(|err| {
            TransparencyError::MalformedBundle(format!(
                "entry {}: not an audit entry: {err}",
                e.seq
            ))
        })?;
        if entry.seq != e.seq {
            return Err(TransparencyError::MalformedBundle(format!(
                "the leaf at index {} says it is entry {}",
                e.seq, entry.seq
            )));
        }
        entries.push(entry);
    }
    if let Some(earlier) = earlier {
        let old = key.open_checkpoint(earlier)?;
        if old.size() > size {
            return Err(TransparencyError::Shrank {
                old: old.size(),
                new: size,
            });
        }
        let consistent = if old.size() == size {
            *old.hash() == root
        } else {
            match &bundle.consistency {
                Some(c) if c.from_size == old.size() => {
                    let proof = decode_hashes(&c.proof)?;
                    tlog_tiles::check_tree(&proof, size, root, old.size(), *old.hash()).is_ok()
                }
                _ => {
                    return Err(TransparencyError::MalformedBundle(format!(
                        "it carries no consistency proof from size {} (fetch it with --since the earlier bundle)",
                        old.size()
                    )));
                }
            }
        };
        if !consistent {
            return Err(TransparencyError::NotConsistent {
                old: old.size(),
                new: size,
            });
        }
    }
    Ok(VerifiedBundle {
        size,
        root,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The signed note of golang.org/x/mod/sumdb/note's documentation and tests (note.go,
    // note_test.go; BSD-3-Clause): its signer key, verifier key, text and signed note.
    const GO_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n\
                           \n\
                           \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn go_signer() -> NoteSigner {
        let b64 = GO_SKEY.splitn(5, '+').nth(4).unwrap(); // the base64 may hold a +
        let typed = B64.decode(b64).unwrap();
        assert_eq!(typed[0], ALG_ED25519);
        NoteSigner::from_seed("PeterNeumann", &typed[1..]).unwrap()
    }

    /// Ed25519 is deterministic: signing Go's text with Go's key gives Go's note byte for byte,
    /// and the verifier key is Go's.
    #[test]
    fn notes_match_go_sumdb_byte_for_byte() {
        let signer = go_signer();
        assert_eq!(signer.verifier_key(), GO_VKEY);
        assert_eq!(signer.sign(GO_TEXT), GO_NOTE);
        let key = VerifierKey::parse(GO_VKEY).unwrap();
        assert_eq!(key.open(GO_NOTE).unwrap(), GO_TEXT);
        // A changed text, a changed signature, another name: refused.
        let changed = GO_NOTE.replace("cryptography", "cryptographY");
        assert_eq!(
            key.open(&changed),
            Err(TransparencyError::BadSignature("PeterNeumann".into()))
        );
        let forged = GO_NOTE.replace("x08go", "x08gp");
        assert!(key.open(&forged).is_err());
        assert!(VerifierKey::parse(&GO_VKEY.replace("c74f20a3", "c74f20a4")).is_err());
        assert!(VerifierKey::parse("PeterNeumann+c74f20a3").is_err());
        // Another signer's line beside the vault's (a witness's cosignature) is ignored.
        let cosigned = format!("{GO_NOTE}\u{2014} witness.example AAAAAAAA\n");
        assert_eq!(key.open(&cosigned).unwrap(), GO_TEXT);
    }

    struct Mem(Vec<Hash>);

    impl tlog_tiles::HashReader for Mem {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
            Ok(indexes.iter().map(|&i| self.0[i as usize]).collect())
        }
    }

    fn entry_bytes(seq: u64) -> Vec<u8> {
        let mut e = AuditEntry {
            seq,
            prev: "0".repeat(64),
            mac: "1".repeat(64),
            event: crate::audit::AuditEvent::new("contoso", "release", Some("k"), "granted"),
        };
        e.event.time_ms = 1_700_000_000_000 + seq;
        serde_json::to_vec(&e).unwrap()
    }

    /// A bundle verifies with the key alone; a changed leaf, a proof for another index, a
    /// checkpoint by another key and a rewritten history are each refused.
    #[test]
    fn bundles_prove_inclusion_and_consistency() {
        let signer = NoteSigner::from_seed("vault.example/audit", &[9; 32]).unwrap();
        let key = VerifierKey::parse(&signer.verifier_key()).unwrap();
        let mut tree = Mem(Vec::new());
        let leaves: Vec<Vec<u8>> = (0..13).map(entry_bytes).collect();
        for (i, leaf) in leaves.iter().enumerate() {
            let hashes = tlog_tiles::stored_hashes(i as u64, leaf, &tree).unwrap();
            tree.0.extend(hashes);
        }
        let at = |size: u64| tlog_tiles::tree_hash(size, &tree).unwrap();
        let bundle_at = |size: u64, seqs: &[u64], since: Option<u64>| AuditBundle {
            checkpoint: signer.checkpoint(size, at(size)),
            entries: seqs
                .iter()
                .map(|&s| ProvenEntry {
                    seq: s,
                    leaf: B64.encode(&leaves[s as usize]),
                    proof: encode_hashes(&tlog_tiles::prove_record(size, s, &tree).unwrap()),
                })
                .collect(),
            consistency: since.map(|old| Consistency {
                from_size: old,
                proof: encode_hashes(&tlog_tiles::prove_tree(size, old, &tree).unwrap()),
            }),
        };
        let early = bundle_at(5, &[0, 4], None);
        let v = verify_bundle(&early, &key, None).unwrap();
        assert_eq!((v.size, v.entries.len()), (5, 2));
        assert_eq!(v.entries[1].seq, 4);

        let late = bundle_at(13, &[4, 12], Some(5));
        assert!(verify_bundle(&late, &key, Some(&early.checkpoint)).is_ok());
        // Without the consistency proof, an earlier checkpoint cannot be checked.
        let mut no_proof = late.clone();
        no_proof.consistency = None;
        assert!(matches!(
            verify_bundle(&no_proof, &key, Some(&early.checkpoint)),
            Err(TransparencyError::MalformedBundle(_))
        ));
        // An earlier checkpoint larger than this one: the log shrank.
        assert_eq!(
            verify_bundle(&early, &key, Some(&late.checkpoint)),
            Err(TransparencyError::Shrank { old: 13, new: 5 })
        );

        // A changed leaf.
        let mut edited = late.clone();
        let mut bytes = leaves[12].clone();
        let at_byte = bytes.iter().position(|&b| b == b'g').unwrap();
        bytes[at_byte] = b'G';
        edited.entries[1].leaf = B64.encode(&bytes);
        assert_eq!(
            verify_bundle(&edited, &key, None),
            Err(TransparencyError::NotIncluded { seq: 12 })
        );
        // A proof moved to another index.
        let mut moved = late.clone();
        moved.entries[0].seq = 3;
        assert_eq!(
            verify_bundle(&moved, &key, None),
            Err(TransparencyError::NotIncluded { seq: 3 })
        );
        // Another key's checkpoint.
        let other = NoteSigner::from_seed("vault.example/audit", &[8; 32]).unwrap();
        let mut forged = late.clone();
        forged.checkpoint = other.checkpoint(13, at(13));
        assert!(matches!(
            verify_bundle(&forged, &key, None),
            Err(TransparencyError::BadSignature(_))
        ));
        // A rewritten history: a tree whose entry 2 differs, signed by the genuine key, does
        // not extend the earlier checkpoint.
        let mut other_tree = Mem(Vec::new());
        for i in 0..13u64 {
            let leaf = if i == 2 {
                entry_bytes(99)
            } else {
                entry_bytes(i)
            };
            let hashes = tlog_tiles::stored_hashes(i, &leaf, &other_tree).unwrap();
            other_tree.0.extend(hashes);
        }
        let fork = AuditBundle {
            checkpoint: signer.checkpoint(13, tlog_tiles::tree_hash(13, &other_tree).unwrap()),
            entries: Vec::new(),
            consistency: Some(Consistency {
                from_size: 5,
                proof: encode_hashes(&tlog_tiles::prove_tree(13, 5, &other_tree).unwrap()),
            }),
        };
        assert_eq!(
            verify_bundle(&fork, &key, Some(&early.checkpoint)),
            Err(TransparencyError::NotConsistent { old: 5, new: 13 })
        );
    }
}
