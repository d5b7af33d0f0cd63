//! The HTTP surface: one axum handler per route (each annotated for the OpenAPI description),
//! the router with its limits, and readiness.

use super::*;
use conclave_protocol::health::Readiness;
type St = State<Arc<Vault>>;

/// Runs each request on tokio's blocking pool. The store commits durably (an fsync per batch)
/// and its group commit waits on a condition variable; neither may hold one of the runtime's few
/// async worker threads, which would stall every other connection meanwhile. A request's own
/// async steps (verifying a token, which may fetch an authority's keys) run there too, on the
/// runtime's handle.
///
/// At most [`MAX_BLOCKING_REQUESTS`] requests hold a blocking thread at once (the others wait
/// for a permit without holding one), so the pool keeps threads for what requests wait on
/// themselves, such as the DNS lookups of an authority's key fetch. The request's tracing span
/// goes along, so the handler's log lines name their request.
async fn off_the_async_workers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    static PERMITS: tokio::sync::Semaphore =
        tokio::sync::Semaphore::const_new(MAX_BLOCKING_REQUESTS);
    let Ok(_permit) = PERMITS.acquire().await else {
        return VaultError::internal("the request limiter is closed").into_response();
    };
    let handle = tokio::runtime::Handle::current();
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(|| handle.block_on(next.run(req))))
        .await
    {
        Ok(response) => response,
        Err(e) => VaultError::internal(e).into_response(),
    }
}

/// How long `/readyz` waits for one authority's keys.
pub const READYZ_AUTHORITY_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests running on the blocking pool at once (tokio's pool has 512 threads).
pub const MAX_BLOCKING_REQUESTS: usize = 256;

#[utoipa::path(
    post, path = "/keys/{name}/create", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes")),
    request_body = crate::api::CreateKeyRequest,
    responses((status = 200, description = "The new KeyBundle", body = crate::api::KeyBundle), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError))
)]
async fn create_key(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<api::KeyBundle>> {
    let who = v.authenticate(&headers)?;
    let req: CreateKeyRequest = v.body(&who, "create", &name, body)?;
    v.create_key(&who, &name, req)
        .map_err(|e| v.rejected(&who, "create", &name, e))
        .map(Json)
}

#[utoipa::path(
    delete, path = "/keys/{name}", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    responses((status = 200, description = "The DeletedKeyBundle: recoverable until scheduledPurgeDate", body = crate::api::DeletedKeyBundle), (status = 403, description = "Not the owner or an admin (audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn delete_key(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<api::DeletedKeyBundle>> {
    let who = v.authenticate(&headers)?;
    v.delete_key(&who, &name)
        .map_err(|e| v.rejected(&who, "delete", &name, e))
        .map(Json)
}

#[utoipa::path(
    get, path = "/deletedkeys", tag = "keys", security(("bearer" = [])),
    responses((status = 200, description = "`{value: [DeletedKeyItem], nextLink}`: the caller's deleted keys (all, for an admin)", body = crate::api::DeletedKeyListResult), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError))
)]
async fn list_deleted(
    State(v): St,
    headers: HeaderMap,
) -> VResult<Json<api::DeletedKeyListResult>> {
    let who = v.authenticate(&headers)?;
    let t = now();
    let mut items = Vec::new();
    for d in v.store.deleted_keys()? {
        let Some(latest) = d.versions.last() else {
            continue;
        };
        if d.scheduled_purge <= t || (latest.owner != who.name && !who.admin) {
            continue;
        }
        items.push(api::deleted_item(v.vault_url(), &d, v.recovery()));
    }
    Ok(Json(api::DeletedKeyListResult {
        value: items,
        next_link: None,
    }))
}

#[utoipa::path(
    get, path = "/deletedkeys/{name}", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    responses((status = 200, description = "The DeletedKeyBundle", body = crate::api::DeletedKeyBundle), (status = 403, description = "Not the owner or an admin (audited)", body = crate::api::AzureError), (status = 404, description = "No such deleted key", body = crate::api::AzureError))
)]
async fn get_deleted(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<api::DeletedKeyBundle>> {
    let who = v.authenticate(&headers)?;
    let d = v.deleted_or_404(&who, &name, "get")?;
    Ok(Json(v.deleted_bundle(&d)))
}

#[utoipa::path(
    post, path = "/deletedkeys/{name}/recover", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    responses((status = 200, description = "The recovered key's KeyBundle", body = crate::api::KeyBundle), (status = 403, description = "Not the owner or an admin (audited)", body = crate::api::AzureError), (status = 404, description = "No such deleted key", body = crate::api::AzureError))
)]
async fn recover_deleted(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<api::KeyBundle>> {
    let who = v.authenticate(&headers)?;
    v.recover_deleted(&who, &name)
        .map_err(|e| v.rejected(&who, "recover", &name, e))
        .map(Json)
}

#[utoipa::path(
    delete, path = "/deletedkeys/{name}", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    responses((status = 204, description = "Purged for good"), (status = 403, description = "Purge protection, or not the owner or an admin (audited)", body = crate::api::AzureError), (status = 404, description = "No such deleted key", body = crate::api::AzureError))
)]
async fn purge_deleted(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<StatusCode> {
    let who = v.authenticate(&headers)?;
    v.purge_deleted(&who, &name)
        .map_err(|e| v.rejected(&who, "purge", &name, e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/keys/{name}/{version}/rewrap", tag = "keys", security(("bearer" = [])),
    params(("name" = String, Path, description = "Key name"), ("version" = String, Path, description = "The version the value is wrapped under")),
    request_body(content = crate::api::KeyOperationsParameters, description = "`{\"alg\": \"RSA-OAEP-256\", \"value\": <base64url wrapped AES key>}`"),
    responses((status = 200, description = "KeyOperationResult `{kid, value}`: the same AES key wrapped under the latest version", body = crate::api::KeyOperationResult), (status = 400, description = "Not an AES key wrapped under that version with RSA-OAEP-256 (audited)", body = crate::api::AzureError), (status = 403, description = "Not the owner or an admin, latest version unusable, or an immutable policy would change (audited)", body = crate::api::AzureError), (status = 404, description = "No such key or version", body = crate::api::AzureError))
)]
async fn rewrap(
    State(v): St,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<api::KeyOperationResult>> {
    let who = v.authenticate(&headers)?;
    let req: api::KeyOperationsParameters = v.body(&who, "rewrap", &name, body)?;
    v.rewrap(&who, &name, &version, &req)
        .map_err(|e| v.rejected(&who, "rewrap", &name, e))
        .map(Json)
}

#[utoipa::path(
    post, path = "/keys/{name}/rotate", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    responses((status = 200, description = "The new version's KeyBundle (the latest's settings, fresh key material)", body = crate::api::KeyBundle), (status = 403, description = "Not the owner (audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn rotate_key(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<api::KeyBundle>> {
    let who = v.authenticate(&headers)?;
    v.rotate_key(&who, &name)
        .map_err(|e| v.rejected(&who, "rotate", &name, e))
        .map(Json)
}

#[utoipa::path(
    get, path = "/keys/{name}/privacybudget", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    responses((status = 200, description = "The key's privacy-budget ledger (Conclave's, not Azure's)", body = crate::api::PrivacyBudget), (status = 404, description = "No such key, or no budget set", body = crate::api::AzureError))
)]
async fn get_privacy_budget(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<api::PrivacyBudget>> {
    let who = v.authenticate(&headers)?;
    v.get_privacy_budget(&who, &name).map(Json)
}

#[utoipa::path(
    put, path = "/keys/{name}/privacybudget", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    request_body = crate::api::PrivacyBudgetParameters,
    responses((status = 200, description = "The key's ledger with its new total", body = crate::api::PrivacyBudget), (status = 400, description = "A total that is not a finite number from 0 to 10^6", body = crate::api::AzureError), (status = 403, description = "Not the owner (audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn put_privacy_budget(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<api::PrivacyBudget>> {
    let who = v.authenticate(&headers)?;
    let params: api::PrivacyBudgetParameters = v.body(&who, "privacy-budget", &name, body)?;
    v.put_privacy_budget(&who, &name, &params)
        .map_err(|e| v.rejected(&who, "privacy-budget", &name, e))
        .map(Json)
}

#[utoipa::path(
    get, path = "/keys/{name}/rotationpolicy", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    responses((status = 200, description = "Azure's KeyRotationPolicy", body = crate::api::KeyRotationPolicy), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn get_rotation_policy(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<api::KeyRotationPolicy>> {
    let who = v.authenticate(&headers)?;
    v.get_rotation_policy(&who, &name).map(Json)
}

#[utoipa::path(
    put, path = "/keys/{name}/rotationpolicy", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    request_body = crate::api::KeyRotationPolicy,
    responses((status = 200, description = "The stored KeyRotationPolicy", body = crate::api::KeyRotationPolicy), (status = 400, description = "A policy Conclave does not carry out (the reason says which part)", body = crate::api::AzureError), (status = 403, description = "Not the owner (audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn put_rotation_policy(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<api::KeyRotationPolicy>> {
    let who = v.authenticate(&headers)?;
    let doc: api::KeyRotationPolicy = v.body(&who, "rotation-policy", &name, body)?;
    v.put_rotation_policy(&who, &name, &doc)
        .map_err(|e| v.rejected(&who, "rotation-policy", &name, e))
        .map(Json)
}

/// `format` of the key backups a vault makes: v2 carries the key's privacy-budget ledger.
pub const BACKUP_FORMAT: &str = "conclave-key-backup/v2";

/// `format` of earlier backups, which may predate the ledger: still restored, and a restore
/// without a ledger is flagged in its audit entry (see `restore_key`).
pub const BACKUP_FORMAT_V1: &str = "conclave-key-backup/v1";

#[utoipa::path(
    post, path = "/keys/{name}/backup", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes")),
    responses((status = 200, description = "`{value: <base64url backup>}`: every version, sealed so that only a vault of the same security domain restores it", body = crate::api::BackupKeyResult), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Not the key's owner (audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn backup_key(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<api::BackupKeyResult>> {
    let who = v.authenticate(&headers)?;
    v.backup_key(&who, &name)
        .map_err(|e| v.rejected(&who, "backup", &name, e))
        .map(Json)
}

#[utoipa::path(
    post, path = "/keys/restore", tag = "keys", security(("bearer" = [])),
    request_body = crate::api::KeyRestoreParameters,
    responses((status = 200, description = "The restored key's latest KeyBundle", body = crate::api::KeyBundle), (status = 400, description = "Not a key backup, or a damaged one", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "A backup from another security domain, or not the key's owner (audited)", body = crate::api::AzureError), (status = 409, description = "A key of that name exists", body = crate::api::AzureError))
)]
async fn restore_key(
    State(v): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<api::KeyBundle>> {
    let who = v.authenticate(&headers)?;
    let req: api::KeyRestoreParameters = v.body(&who, "restore", "-", body)?;
    v.restore_key(&who, &req)
        .map_err(|e| v.rejected(&who, "restore", "-", e))
        .map(Json)
}

#[utoipa::path(
    get, path = "/keys/{name}", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes")),
    responses((status = 200, description = "The latest version's KeyBundle (public JWK only)", body = crate::api::KeyBundle), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn get_key(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<api::KeyBundle>> {
    get_version(State(v), Path((name, String::new())), headers).await
}

#[utoipa::path(
    get, path = "/keys/{name}/{version}", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes"), ("version" = String, Path, description = "Key version: 32 hex digits")),
    responses((status = 200, description = "That version's KeyBundle (public JWK only)", body = crate::api::KeyBundle), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn get_version(
    State(v): St,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> VResult<Json<api::KeyBundle>> {
    let who = v.authenticate(&headers)?;
    let rec = v.key_or_404(&name, (!version.is_empty()).then_some(version.as_str()))?;
    if !v.permitted(&who, &rec, Permission::Get)? {
        return Err(v.deny(
            &who,
            "get",
            &name,
            &format!("principal {} has no get grant on key {name}", who.name),
        ));
    }
    Ok(Json(v.bundle(&rec)))
}

#[utoipa::path(
    get, path = "/keys/{name}/versions", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes")),
    responses((status = 200, description = "`{value: [KeyItem], nextLink}`", body = crate::api::KeyListResult), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn list_versions(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<api::KeyListResult>> {
    let who = v.authenticate(&headers)?;
    let latest = v.key_or_404(&name, None)?;
    if !v.permitted(&who, &latest, Permission::Get)? {
        return Err(v.deny(
            &who,
            "get",
            &name,
            &format!("principal {} has no get grant on key {name}", who.name),
        ));
    }
    let value = v
        .store
        .versions(&name)?
        .iter()
        .map(|r| api::item(v.vault_url(), r, v.recovery()))
        .collect();
    Ok(Json(api::KeyListResult {
        value,
        next_link: None,
    }))
}

#[utoipa::path(
    get, path = "/keys", tag = "keys", security(("bearer" = [])),
    responses((status = 200, description = "The keys the caller may see: `{value: [KeyItem], nextLink}`", body = crate::api::KeyListResult), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError))
)]
async fn list_keys(State(v): St, headers: HeaderMap) -> VResult<Json<api::KeyListResult>> {
    let who = v.authenticate(&headers)?;
    let mut items = Vec::new();
    for rec in v.store.latest_versions()? {
        if v.permitted(&who, &rec, Permission::Get)? {
            items.push(api::item(v.vault_url(), &rec, v.recovery()));
        }
    }
    Ok(Json(api::KeyListResult {
        value: items,
        next_link: None,
    }))
}

#[utoipa::path(
    patch, path = "/keys/{name}/{version}", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes"), ("version" = String, Path, description = "Key version: 32 hex digits")),
    request_body = crate::api::UpdateKeyRequest,
    responses((status = 200, description = "The updated KeyBundle", body = crate::api::KeyBundle), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn update_key(
    State(v): St,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<api::KeyBundle>> {
    let who = v.authenticate(&headers)?;
    let req: UpdateKeyRequest = v.body(&who, "update", &name, body)?;
    v.update_key(&who, &name, &version, req)
        .map_err(|e| v.rejected(&who, "update", &name, e))
        .map(Json)
}

#[utoipa::path(
    post, path = "/keys/{name}/release", tag = "release", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes")),
    request_body = crate::api::ReleaseRequest,
    responses((status = 200, description = "The key wrapped to the attested TEE's key, in a JWS", body = crate::api::ReleaseResponse), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn release_latest(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<api::ReleaseResponse>> {
    let (who, rec) = v.authenticate_with_key(&headers, &name, None)?;
    let req: ReleaseRequest = v.body(&who, "release", &name, body)?;
    v.release(&who, &name, rec, req)
        .await
        .map(Json)
        .map_err(|e| v.rejected(&who, "release", &name, e))
}

#[utoipa::path(
    post, path = "/keys/{name}/{version}/release", tag = "release", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes"), ("version" = String, Path, description = "Key version: 32 hex digits")),
    request_body = crate::api::ReleaseRequest,
    responses((status = 200, description = "The key wrapped to the attested TEE's key, in a JWS", body = crate::api::ReleaseResponse), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn release_version(
    State(v): St,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<api::ReleaseResponse>> {
    // Azure's SDKs release the latest version as `/keys/{name}//release`.
    let version = (!version.is_empty()).then_some(version.as_str());
    let (who, rec) = v.authenticate_with_key(&headers, &name, version)?;
    let req: ReleaseRequest = v.body(&who, "release", &name, body)?;
    v.release(&who, &name, rec, req)
        .await
        .map(Json)
        .map_err(|e| v.rejected(&who, "release", &name, e))
}

#[utoipa::path(
    get, path = "/keys/{name}/grants", tag = "grants", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes")),
    responses((status = 200, description = "`{owner, value: [Grant]}` (owner only)", body = crate::api::GrantList), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn list_grants(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<api::GrantList>> {
    let who = v.authenticate(&headers)?;
    v.list_grants(&who, &name).map(Json)
}

#[utoipa::path(
    put, path = "/keys/{name}/grants/{principal}", tag = "grants", security(("bearer" = [])),
    params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes"), ("principal" = String, Path, description = "The principal granted")),
    request_body = crate::api::GrantRequest,
    responses((status = 200, description = "The grant", body = crate::api::Grant), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn put_grant(
    State(v): St,
    Path((name, principal)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<api::Grant>> {
    let who = v.authenticate(&headers)?;
    let req: GrantRequest = v.body(&who, "grant", &name, body)?;
    v.put_grant(&who, &name, &principal, req).map(Json)
}

#[utoipa::path(
    delete, path = "/keys/{name}/grants/{principal}", tag = "grants", security(("bearer" = [])),
    params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes"), ("principal" = String, Path, description = "The principal whose grant is revoked")),
    responses((status = 204, description = "Revoked"), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key or grant", body = crate::api::AzureError))
)]
async fn delete_grant(
    State(v): St,
    Path((name, principal)): Path<(String, String)>,
    headers: HeaderMap,
) -> VResult<StatusCode> {
    let who = v.authenticate(&headers)?;
    v.revoke_grant(&who, &name, &principal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

#[utoipa::path(
    get, path = "/audit", tag = "audit", security(("bearer" = [])),
    params(("from" = Option<u64>, Query, description = "First sequence number"), ("limit" = Option<u64>, Query, description = "At most this many entries (≤ 10,000)")),
    responses((status = 200, description = "`{value: [entry], head}`: the entries the caller may see", body = crate::api::AuditPage), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError))
)]
async fn audit(
    State(v): St,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> VResult<Json<api::AuditPage>> {
    let who = v.authenticate(&headers)?;
    v.audit_for(
        &who,
        q.from.unwrap_or(0),
        q.limit.unwrap_or(1000).min(10_000),
    )
    .map(Json)
}

#[derive(serde::Deserialize, Default)]
struct ProofsQuery {
    from: Option<u64>,
    limit: Option<usize>,
    since: Option<u64>,
}

#[utoipa::path(
    get, path = "/audit/checkpoint", tag = "audit", security(("bearer" = [])),
    responses((status = 200, description = "The audit log's head: a C2SP tlog-checkpoint (origin, size, RFC 6962 root) signed as a C2SP signed note with the vault's Ed25519 audit key (text/plain)", body = String), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError))
)]
async fn audit_checkpoint(State(v): St, headers: HeaderMap) -> VResult<Response> {
    v.authenticate(&headers)?;
    let (_, note) = v.audit_checkpoint()?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        note,
    )
        .into_response())
}

#[utoipa::path(
    get, path = "/audit/key", tag = "audit", security(("bearer" = [])),
    responses((status = 200, description = "`{verifier_key}`: the C2SP signed-note verifier key of the audit checkpoints (`<origin>+<key hash>+<base64 Ed25519 key>`); compare it out of band", body = crate::api::AuditVerifierKey), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError))
)]
async fn audit_key(State(v): St, headers: HeaderMap) -> VResult<Json<api::AuditVerifierKey>> {
    v.authenticate(&headers)?;
    Ok(Json(api::AuditVerifierKey {
        verifier_key: v.audit_verifier_key(),
    }))
}

#[utoipa::path(
    get, path = "/audit/proofs", tag = "audit", security(("bearer" = [])),
    params(("from" = Option<u64>, Query, description = "First sequence number"), ("limit" = Option<u64>, Query, description = "At most this many entries read (≤ 1,000; page with from)"), ("since" = Option<u64>, Query, description = "The size of an earlier checkpoint: add the consistency proof from it")),
    responses((status = 200, description = "`{checkpoint, entries: [{seq, leaf, proof}], consistency?}`: the entries the caller may see with RFC 9162 inclusion proofs against the signed checkpoint", body = crate::api::AuditBundle), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError))
)]
async fn audit_proofs(
    State(v): St,
    headers: HeaderMap,
    Query(q): Query<ProofsQuery>,
) -> VResult<Json<crate::transparency::AuditBundle>> {
    let who = v.authenticate(&headers)?;
    v.audit_proofs(
        &who,
        q.from.unwrap_or(0),
        q.limit.unwrap_or(1000).min(1000),
        q.since,
    )
    .map(Json)
}

#[utoipa::path(
    post, path = "/principals/{name}", tag = "principals", security(("bearer" = [])),
    params(("name" = String, Path, description = "Principal name: 1-127 letters, digits and dashes")),
    request_body(content = crate::api::PrincipalRequest, description = "Optional `{admin: bool}`"),
    responses((status = 200, description = "`{token}`: the principal's new bearer token", body = crate::api::PrincipalCreated), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError))
)]
async fn add_principal(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<api::PrincipalCreated>> {
    let who = v.authenticate(&headers)?;
    v.require_admin(&who)?;
    let req: api::PrincipalRequest = match body {
        Ok(b) if b.is_empty() => api::PrincipalRequest::default(),
        other => parse_body(other)?,
    };
    let token = v.add_principal(&who.name, &name, req.admin)?;
    tracing::info!(principal = %name, admin = req.admin, by = %who.name, "principal added");
    Ok(Json(api::PrincipalCreated { token }))
}

async fn not_found() -> VaultError {
    VaultError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "no such endpoint (the keys API lives under /keys)",
    )
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// The OpenAPI 3.1 description of the vault's HTTP API, generated from its handlers and wire
/// types (`conclave kms openapi` prints it). Every error answers [`crate::api::AzureError`].
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Conclave key vault",
        description = "Azure Key Vault's keys API (7.x shapes) with secure key release, plus grants, principals and the audit log."
    ),
    paths(
        list_keys, get_key, get_version, create_key, backup_key, restore_key, delete_key,
        list_deleted, get_deleted, recover_deleted, purge_deleted, rotate_key,
        get_rotation_policy, put_rotation_policy, get_privacy_budget, put_privacy_budget, list_versions, update_key, release_latest,
        release_version, rewrap, list_grants, put_grant, delete_grant, audit, audit_checkpoint,
        audit_key, audit_proofs, add_principal, healthz,
        readyz
    ),
    components(schemas(crate::api::AzureError, crate::store::Permission)),
    modifiers(&BearerAuth)
)]
pub struct VaultApi;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// `GET /readyz`: ready when the store answers, and every trusted attestation authority's
/// signing keys are at hand (fetched if needed); 503 with the failing checks otherwise. The master
/// key is loaded before the vault exists.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready, with each check", body = conclave_protocol::health::Readiness), (status = 503, description = "Not ready, with the failing checks", body = conclave_protocol::health::Readiness))
)]
async fn readyz(State(v): St) -> (StatusCode, Json<Readiness>) {
    let mut checks = std::collections::BTreeMap::new();
    let mut ready = true;
    match v.store.audit_head() {
        Ok(_) => checks.insert("store".into(), "ok".into()),
        Err(e) => {
            ready = false;
            checks.insert("store".into(), format!("unavailable: {e}"))
        }
    };
    checks.insert("master_key".into(), "loaded".into());
    if v.config.authorities.is_empty() {
        ready = false;
        checks.insert(
            "authorities".into(),
            "none configured: no key can be released".into(),
        );
    }
    // Every authority at once, each within READYZ_AUTHORITY_TIMEOUT, so that one slow
    // authority gives a named check rather than a timeout of the whole answer.
    let outcomes = futures::future::join_all(v.config.authorities.iter().map(|a| async move {
        let outcome =
            tokio::time::timeout(READYZ_AUTHORITY_TIMEOUT, a.verifier.ensure_keys()).await;
        (a.issuer.clone(), outcome)
    }))
    .await;
    for (issuer, outcome) in outcomes {
        let check = match outcome {
            Ok(Ok(n)) => format!("{n} signing keys"),
            Ok(Err(e)) => {
                ready = false;
                e.to_string()
            }
            Err(_) => {
                ready = false;
                format!(
                    "cannot fetch its keys within {} s",
                    READYZ_AUTHORITY_TIMEOUT.as_secs()
                )
            }
        };
        checks.insert(format!("authority {issuer}"), check);
    }
    let readiness = Readiness::new(ready, checks);
    (
        StatusCode::from_u16(readiness.status_code()).expect("200 or 503"),
        Json(readiness),
    )
}

/// The vault's routes with body limit and timeout, metrics and request spans.
pub fn router(vault: Arc<Vault>) -> Router {
    let metrics = vault.metrics.clone();
    let router = Router::new()
        .route("/keys", get(list_keys))
        .route("/keys/{name}", get(get_key).delete(delete_key))
        .route("/deletedkeys", get(list_deleted))
        .route(
            "/deletedkeys/{name}",
            get(get_deleted).delete(purge_deleted),
        )
        .route("/deletedkeys/{name}/recover", post(recover_deleted))
        // Azure's SDKs ask for the latest version as `/keys/{name}/` (an empty version).
        .route("/keys/{name}/", get(get_key))
        .route("/keys/{name}/create", post(create_key))
        .route("/keys/{name}/backup", post(backup_key))
        .route("/keys/{name}/rotate", post(rotate_key))
        .route(
            "/keys/{name}/rotationpolicy",
            get(get_rotation_policy).put(put_rotation_policy),
        )
        .route(
            "/keys/{name}/privacybudget",
            get(get_privacy_budget).put(put_privacy_budget),
        )
        .route("/keys/restore", post(restore_key))
        .route("/keys/{name}/versions", get(list_versions))
        .route("/keys/{name}/release", post(release_latest))
        .route("/keys/{name}/grants", get(list_grants))
        .route(
            "/keys/{name}/grants/{principal}",
            put(put_grant).delete(delete_grant),
        )
        .route("/keys/{name}/{version}", get(get_version).patch(update_key))
        .route("/keys/{name}/{version}/release", post(release_version))
        .route("/keys/{name}/{version}/rewrap", post(rewrap))
        .route("/principals/{name}", post(add_principal))
        .route("/audit", get(audit))
        .route("/audit/checkpoint", get(audit_checkpoint))
        .route("/audit/key", get(audit_key))
        .route("/audit/proofs", get(audit_proofs))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(off_the_async_workers))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(vault);
    conclave_net::observe::observe(router, metrics)
}
