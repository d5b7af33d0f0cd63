//! Request-level attacks: malformed, oversized and replayed requests.

use super::*;

pub async fn run(c: &Ctx, m: &mut Matrix) {
    let Ctx {
        env,
        admin,
        contoso_token,
        ..
    } = c;
    let v = admin;
    let raw = |path: &str, body: Vec<u8>| {
        env.http
            .post(format!("{}{path}?api-version=7.4", env.vault_url))
            .bearer_auth(contoso_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (attack, path, body, status, needle) in [
        (
            "path traversal in a key name",
            "/keys/..%2F..%2Fetc%2Fpasswd/create",
            b"{}".to_vec(),
            400,
            "key names",
        ),
        (
            "oversized JSON body",
            "/keys/x/create",
            vec![b' '; 100 * 1024],
            413,
            "limit",
        ),
        (
            "deeply nested JSON body",
            "/keys/x/create",
            format!("{}1{}", "[".repeat(100), "]".repeat(100)).into_bytes(),
            400,
            "nests deeper",
        ),
    ] {
        let resp = raw(path, body).await.unwrap();
        let got = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        let result: Result<(), ClientError> = Err(ClientError::Refused {
            status: got,
            code: body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            message: body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        });
        vault_refusal(m, attack, v, result, status, needle, "create").await;
    }
}
