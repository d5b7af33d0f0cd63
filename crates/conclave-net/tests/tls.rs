//! A service served over TLS with a certificate from the local CA is reachable by clients that
//! trust the CA, and only by them.

use conclave_net::{LocalCa, client, serve, server_config};

#[tokio::test]
async fn tls_with_the_local_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
    let issued = ca
        .server_cert(
            &dir.path().join("certs"),
            "svc",
            &["127.0.0.1", "localhost"],
        )
        .unwrap();
    let tls = server_config(&issued.chain_pem, &issued.key_pk8).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router =
        axum::Router::new().route("/hello", axum::routing::get(|| async { "hello over TLS" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, router, Some(tls), async {
        stopped.await.ok();
    }));

    let trusted = client(Some(&ca.cert_path())).unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let body = trusted
            .get(format!("https://{host}:{}/hello", addr.port()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "hello over TLS");
    }
    let untrusting = client(None).unwrap();
    assert!(
        untrusting
            .get(format!("https://127.0.0.1:{}/hello", addr.port()))
            .send()
            .await
            .is_err()
    );

    // Reopening the CA gives the same CA; the server certificate is reused for the same names.
    let again = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
    assert_eq!(again.cert().der, ca.cert().der);
    let reissued = again
        .server_cert(
            &dir.path().join("certs"),
            "svc",
            &["127.0.0.1", "localhost"],
        )
        .unwrap();
    assert_eq!(
        std::fs::read(&reissued.chain_pem).unwrap(),
        std::fs::read(&issued.chain_pem).unwrap()
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
