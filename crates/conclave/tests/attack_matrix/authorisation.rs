//! Authorisation: grants, owners, bearer tokens.

use super::*;

pub async fn run(c: &Ctx, m: &mut Matrix) {
    let Ctx {
        env,
        admin,
        contoso,
        fabrikam,
        woodgrove,
        genuine,
        ..
    } = c;
    let v = admin;
    vault_refusal(
        m,
        "cross-party release with no grant",
        v,
        contoso
            .release("fabrikam-data", &release(genuine.clone(), None))
            .await,
        403,
        "has no release grant",
        "release",
    )
    .await;

    fabrikam
        .grant("fabrikam-data", "woodgrove", &[Permission::Release])
        .await
        .unwrap();
    woodgrove
        .release("fabrikam-data", &release(genuine.clone(), None))
        .await
        .unwrap();
    fabrikam.revoke("fabrikam-data", "woodgrove").await.unwrap();
    vault_refusal(
        m,
        "release after revocation",
        v,
        woodgrove
            .release("fabrikam-data", &release(genuine.clone(), None))
            .await,
        403,
        "has no release grant",
        "release",
    )
    .await;

    let created = contoso.get_key("contoso-data").await.unwrap();
    let version = created.key.version().to_string();
    let lax = UpdateKeyRequest {
        release_policy: Some(ReleasePolicyBody {
            content_type: None,
            data: Some(b64url(env.policy("00").to_string().as_bytes())),
            immutable: None,
        }),
        ..Default::default()
    };
    vault_refusal(
        m,
        "release policy changed by a non-owner",
        v,
        woodgrove.update_key("contoso-data", &version, &lax).await,
        403,
        "only the key's owner",
        "update",
    )
    .await;

    let fixed = contoso
        .create_key("fixed", &exportable(&strict_policy(env), true))
        .await
        .unwrap();
    let fixed_version = fixed.key.version().to_string();
    vault_refusal(
        m,
        "change of an immutable policy",
        v,
        contoso.update_key("fixed", &fixed_version, &lax).await,
        403,
        "immutable",
        "policy-change",
    )
    .await;

    // Another principal's bearer token gives that principal's rights, not the owner's.
    vault_refusal(
        m,
        "bearer token of another principal (grants on a key it does not own)",
        v,
        fabrikam
            .grant("contoso-data", "fabrikam", &[Permission::Release])
            .await,
        403,
        "owner",
        "grant",
    )
    .await;
    let forged_bearer = env.client("cvt_forged-bearer-token");
    vault_refusal(
        m,
        "forged bearer token",
        v,
        forged_bearer.get_key("contoso-data").await,
        401,
        "the bearer token is not valid for this vault",
        "authenticate",
    )
    .await;
}
