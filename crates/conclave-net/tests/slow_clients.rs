//! Slow-loris clients: connections that never finish a TLS handshake, or trickle their headers,
//! are cut off by the server ([`HANDSHAKE_TIMEOUT`], [`HEADER_READ_TIMEOUT`]) and do not keep
//! others from being served meanwhile.

use std::time::{Duration, Instant};

use conclave_net::{HANDSHAKE_TIMEOUT, HEADER_READ_TIMEOUT, LocalCa, client, serve, server_config};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const SLOW_CLIENTS: usize = 32;

/// Waits until the server closes `conn`: a read returns end of stream or an error. Writes one
/// header byte every second meanwhile when `trickle` is set.
async fn closed_by_server(mut conn: TcpStream, trickle: bool) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    // Far beyond the server's timeouts: reaching it means the server never cut the client off.
    let give_up = Duration::from_secs(120);
    loop {
        assert!(
            started.elapsed() < give_up,
            "the server kept a slow client for {give_up:?}"
        );
        if trickle && conn.write_all(b"x").await.is_err() {
            return started.elapsed();
        }
        match tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) if trickle => return started.elapsed(), // an error response, then close
            Ok(Ok(_)) | Err(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_others_are_served_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
    let issued = ca
        .server_cert(&dir.path().join("certs"), "svc", &["127.0.0.1"])
        .unwrap();
    let router = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));

    let tls_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = tls_listener.local_addr().unwrap();
    let tls = server_config(&issued.chain_pem, &issued.key_pk8).unwrap();
    tokio::spawn(serve(
        tls_listener,
        router.clone(),
        Some(tls),
        std::future::pending(),
    ));
    let plain_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain_listener.local_addr().unwrap();
    tokio::spawn(serve(plain_listener, router, None, std::future::pending()));

    // Clients that open a TLS port and never say anything.
    let mut silent = Vec::new();
    for _ in 0..SLOW_CLIENTS {
        let conn = TcpStream::connect(tls_addr).await.unwrap();
        silent.push(tokio::spawn(closed_by_server(conn, false)));
    }
    // Clients that start a request and trickle its headers one byte a second.
    let mut trickling = Vec::new();
    for _ in 0..SLOW_CLIENTS {
        let mut conn = TcpStream::connect(plain_addr).await.unwrap();
        conn.write_all(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await
            .unwrap();
        trickling.push(tokio::spawn(closed_by_server(conn, true)));
    }

    // Meanwhile, a well-behaved client is served on both ports.
    let trusted = client(Some(&ca.cert_path())).unwrap();
    for url in [
        format!("https://127.0.0.1:{}/hello", tls_addr.port()),
        format!("http://127.0.0.1:{}/hello", plain_addr.port()),
    ] {
        let body = trusted
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "hello", "{url}");
    }

    // Every slow client is cut off, none before the server's timeout.
    for t in silent {
        let held = t.await.unwrap();
        assert!(
            held + Duration::from_secs(1) >= HANDSHAKE_TIMEOUT,
            "{held:?}"
        );
    }
    for t in trickling {
        let held = t.await.unwrap();
        assert!(
            held + Duration::from_secs(1) >= HEADER_READ_TIMEOUT,
            "{held:?}"
        );
    }
}
