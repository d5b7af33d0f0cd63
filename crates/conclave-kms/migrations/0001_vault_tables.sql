-- The vault's tables on PostgreSQL (see crates/conclave-kms/src/store/postgres.rs). Each holds
-- ordered keys and the same JSON records as the embedded redb store: keys are UTF-8 text, or
-- 8 bytes big-endian for the integer keys of vault_audit and vault_audit_tree, so that byte
-- order (bytea's order) is key order.

-- Key versions: 'name/version' -> key record (the private part sealed under the master key).
CREATE TABLE vault_keys (k bytea PRIMARY KEY, v bytea NOT NULL);
-- name -> the latest version (UTF-8).
CREATE TABLE vault_latest (k bytea PRIMARY KEY, v bytea NOT NULL);
-- 'name' NUL 'principal' -> grant.
CREATE TABLE vault_grants (k bytea PRIMARY KEY, v bytea NOT NULL);
-- name -> principal (with the SHA-256 of its bearer token, never the token).
CREATE TABLE vault_principals (k bytea PRIMARY KEY, v bytea NOT NULL);
-- token SHA-256 -> principal name (UTF-8).
CREATE TABLE vault_tokens (k bytea PRIMARY KEY, v bytea NOT NULL);
-- seq -> audit entry, MAC-chained; the JSON bytes are the Merkle tree's leaves.
CREATE TABLE vault_audit (k bytea PRIMARY KEY, v bytea NOT NULL);
-- The audit head and the tree size.
CREATE TABLE vault_meta (k bytea PRIMARY KEY, v bytea NOT NULL);
-- name -> soft-deleted key with all its versions.
CREATE TABLE vault_deleted (k bytea PRIMARY KEY, v bytea NOT NULL);
-- name -> rotation policy.
CREATE TABLE vault_rotation (k bytea PRIMARY KEY, v bytea NOT NULL);
-- Stored hash index -> SHA-256 of a complete subtree of the audit log's Merkle tree.
CREATE TABLE vault_audit_tree (k bytea PRIMARY KEY, v bytea NOT NULL);
