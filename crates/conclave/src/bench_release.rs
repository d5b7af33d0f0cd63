//! `conclave bench release`: evidence → token → release → unwrap cycles per second and latency
//! percentiles over real TLS on loopback, and the crypto bound of the same operations without
//! HTTP, measured in the same run.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use conclave_attest::api::{AttestSevSnpVmRequest, attest, report_data_for};
use conclave_attest::{AppraisalPolicy, PlatformName};
use conclave_kms::api::{CreateKeyRequest, KeyAttributes, ReleaseRequest};
use conclave_kms::client::{VaultClient, open_release};
use conclave_net::LocalCa;
use conclave_sim_host::{LaunchIdentity, SimHost, measure};
use conclave_snp::TrustedRoots;
use conclave_tee::ephemeral::EphemeralKey;
use conclave_tee::{Evidence, Platform};

const CONFIG: &[u8] = b"party = \"woodgrove\"\n";

fn identity() -> LaunchIdentity {
    LaunchIdentity {
        measurement: measure(b"bench-workload", &[], CONFIG),
        host_data: conclave_sim_host::host_data(CONFIG),
        policy: conclave_snp::report::GuestPolicy(0x3_0000),
        report_id: [9; 32],
    }
}

fn evidence(sim: &SimHost, runtime: &[u8]) -> anyhow::Result<Evidence> {
    Ok(Evidence {
        platform: Platform::Sim,
        report: sim
            .platform()
            .sign_report(&identity(), report_data_for(runtime))?,
        cert_chain_pem: sim.platform().cert_chain_pem(),
        hcl_runtime_claims: None,
        tpm_quote: None,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// One store's figures.
struct Measured {
    cycles: usize,
    errors: u64,
    first_error: Option<String>,
    rate: f64,
    latency: Vec<Duration>,
}

/// Measures attest + release cycles against a vault on the embedded store, and with
/// `postgres` also against one on that PostgreSQL database, side by side in one run.
pub async fn run(
    concurrency: usize,
    seconds: u64,
    json: bool,
    postgres: Option<String>,
) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::tempdir().context("temporary directory")?;
    let dir = tmp.path();
    let ca = LocalCa::load_or_create(&dir.join("ca"))?;
    let http = conclave_net::client(Some(&ca.cert_path()))?;
    let sim = Arc::new(SimHost::open(&dir.join("sim"))?);
    // One TEE key per client, as each workload has one.
    eprintln!("preparing {concurrency} TEE keys …");
    let tee_keys: Vec<Arc<EphemeralKey>> = (0..concurrency)
        .map(|_| EphemeralKey::generate().map(Arc::new))
        .collect::<Result<_, _>>()?;

    let rss_before = crate::bench_cmd::rss();
    crate::bench_cmd::reset_peak_rss();
    let redb = measure_store(dir, &ca, &http, &sim, &tee_keys, seconds, None, "redb").await?;
    let mut pg_database = None;
    let pg = match postgres {
        Some(url) => {
            // A database of its own for this run, dropped after: a vault's tables belong to
            // the vault (and master key) that made them.
            let (admin, database) = fresh_database(&url).await?;
            pg_database = Some((admin, database.clone()));
            let mut config: tokio_postgres::Config =
                url.parse().context("the PostgreSQL URL for the bench")?;
            config.dbname(&database);
            let backend = conclave_kms::store::postgres::PgBackend::connect_config(config)
                .await
                .context("the PostgreSQL database for the bench")?;
            Some(
                measure_store(
                    dir,
                    &ca,
                    &http,
                    &sim,
                    &tee_keys,
                    seconds,
                    Some(backend),
                    "postgres",
                )
                .await?,
            )
        }
        None => None,
    };
    if let Some((admin, database)) = &pg_database {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .await;
    }
    // Memory of the whole process (clients, attestation services and vaults together).
    let (rss_after, rss_peak) = (crate::bench_cmd::rss(), crate::bench_cmd::peak_rss());

    // The same cryptography without HTTP, on every core.
    eprintln!("measuring the crypto bound …");
    let (bound_sim, bound_dir) = (sim.clone(), dir.to_path_buf());
    let bound = tokio::task::spawn_blocking(move || {
        crypto_bound(
            &bound_sim,
            &bound_dir,
            Duration::from_secs(seconds.clamp(2, 10)),
        )
    })
    .await??;

    let figures = |m: &Measured| {
        serde_json::json!({
            "cycles": m.cycles,
            "errors": m.errors,
            "first_error": m.first_error,
            "cycles_per_s": m.rate,
            "latency_ms": {"p50": percentile(&m.latency, 0.5), "p95": percentile(&m.latency, 0.95), "p99": percentile(&m.latency, 0.99)},
        })
    };
    let mut out = figures(&redb);
    out["concurrency"] = concurrency.into();
    out["crypto_bound_cycles_per_s"] = bound.into();
    out["ratio_to_crypto_bound"] = (redb.rate / bound).into();
    out["rss_bytes"] =
        serde_json::json!({"before": rss_before, "peak": rss_peak, "after": rss_after});
    if let Some(pg) = &pg {
        out["postgres"] = figures(pg);
        out["postgres_to_redb"] = (pg.rate / redb.rate).into();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("attest + release over TLS, {concurrency} clients, {seconds} s per store");
        let line = |name: &str, m: &Measured| {
            println!(
                "  {name:<9} cycles/s {:>8.1}   ({} cycles, {} errors)   latency p50/p95/p99 {:.1} {:.1} {:.1} ms",
                m.rate,
                m.cycles,
                m.errors,
                percentile(&m.latency, 0.5),
                percentile(&m.latency, 0.95),
                percentile(&m.latency, 0.99)
            );
        };
        line("redb", &redb);
        if let Some(pg) = &pg {
            line("postgres", pg);
            println!("  postgres / redb          {:>8.2}", pg.rate / redb.rate);
        }
        println!("  crypto bound cycles/s    {bound:>8.1}");
        println!("  ratio to the bound       {:>8.2}", redb.rate / bound);
        let mib = |b: Option<u64>| b.map_or("?".into(), |b| format!("{:.1}", b as f64 / 1048576.0));
        println!(
            "  RSS before/peak/after    {:>8} {} {} MiB (clients, attestation services and vaults)",
            mib(rss_before),
            mib(rss_peak),
            mib(rss_after)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates a database for one bench run on the server of `url`; returns a connection to the
/// server (to drop it after) and its name.
async fn fresh_database(url: &str) -> anyhow::Result<(tokio_postgres::Client, String)> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| "connecting to the PostgreSQL server for the bench".to_string())?;
    tokio::spawn(connection);
    let name = format!("conclave_bench_{}", std::process::id());
    // Two statements apart: a multi-statement batch is one transaction, which these refuse.
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        client
            .batch_execute(&sql)
            .await
            .context("creating the bench's database (the role needs CREATEDB)")?;
    }
    Ok((client, name))
}

/// Runs the clients for `seconds` against a fresh attestation service and vault (its store in
/// `postgres` when given).
#[allow(clippy::too_many_arguments)]
async fn measure_store(
    dir: &std::path::Path,
    ca: &LocalCa,
    http: &reqwest::Client,
    sim: &Arc<SimHost>,
    tee_keys: &[Arc<EphemeralKey>],
    seconds: u64,
    postgres: Option<conclave_kms::store::postgres::PgBackend>,
    name: &str,
) -> anyhow::Result<Measured> {
    let dir = dir.join(name);
    let concurrency = tee_keys.len();

    let stop = conclave_deploy::Stop::default();
    let (attest_url, _) = conclave_deploy::attestation_service(
        &dir.join("attest"),
        ca,
        sim,
        conclave_deploy::policy_for(&[PlatformName::Sim]),
        Duration::from_secs(600),
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        &stop,
    )?;
    let vault_dir = dir.join("vault");
    let (vault_url, admin_token_path, _) = conclave_deploy::vault(
        conclave_deploy::VaultSpec {
            postgres,
            ..conclave_deploy::VaultSpec::new(&vault_dir, ca, http, &attest_url)
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        &stop,
    )?;

    let admin = std::fs::read_to_string(&admin_token_path)?;
    // A database used before has its principals and keys: a fresh name for each run.
    let bench = format!("bench-{}", std::process::id());
    let token = VaultClient::new(http.clone(), &vault_url, &admin)
        .add_principal(&bench, false)
        .await?;
    let client = Arc::new(VaultClient::new(http.clone(), &vault_url, &token));
    let policy = conclave_kms::policy::ReleasePolicy::for_authority(
        &attest_url,
        vec![conclave_kms::policy::Condition::equals(
            "x-ms-sevsnpvm-launchmeasurement",
            hex::encode(identity().measurement),
        )],
    );
    client
        .create_key(
            &bench,
            &CreateKeyRequest {
                attributes: Some(KeyAttributes {
                    exportable: Some(true),
                    ..Default::default()
                }),
                release_policy: Some(policy.to_body(false)),
                ..Default::default()
            },
        )
        .await?;

    let ca_cert = Arc::new(ca.cert().clone());
    let running = Arc::new(AtomicBool::new(true));
    eprintln!("running {concurrency} clients for {seconds} s against the vault on {name} …");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for tee in tee_keys.iter().map(Arc::clone) {
        let (sim, client, http, attest_url, running, ca_cert, key) = (
            sim.clone(),
            client.clone(),
            http.clone(),
            attest_url.clone(),
            running.clone(),
            ca_cert.clone(),
            bench.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut first_error: Option<String> = None;
            let runtime = tee.runtime_json();
            while running.load(Ordering::Relaxed) {
                let t = Instant::now();
                let cycle = async {
                    let ev = evidence(&sim, &runtime)?;
                    let token = attest(
                        &http,
                        &attest_url,
                        &AttestSevSnpVmRequest::new(&ev, &runtime, None),
                    )
                    .await?;
                    let jws = client
                        .release(
                            &key,
                            &ReleaseRequest {
                                target: token,
                                ..Default::default()
                            },
                        )
                        .await?;
                    open_release(&jws, &ca_cert, tee.private_key())?;
                    anyhow::Ok(())
                }
                .await;
                match cycle {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    running.store(false, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (l, e, f) = t.await?;
        lat.extend(l);
        errors += e;
        first_error = first_error.or(f);
    }
    if let Some(e) = &first_error {
        eprintln!("first error ({name}): {e}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.stop();
    lat.sort();
    Ok(Measured {
        cycles: lat.len(),
        errors,
        first_error,
        rate: lat.len() as f64 / elapsed,
        latency: lat,
    })
}

/// Cycles per second of the cycle's cryptography alone, on every core: report signature, chain
/// and report verification, token signing and verification, key wrap, release JWS signing, and
/// the client's opening of the release (certificate and signature check, unwrap, key parse).
fn crypto_bound(sim: &SimHost, dir: &std::path::Path, duration: Duration) -> anyhow::Result<f64> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let ring = conclave_attest::keys::KeyRing::open(&dir.join("token-keys"))?;
    let token_key = ring.active();
    let jwks = ring.jwks(Duration::from_secs(600));
    let verifier = conclave_attest::TokenVerifier::with_jwks(None, &jwks);
    let target = conclave_kms::crypto::generate_rsa(2048)?;
    let tee = EphemeralKey::generate()?;
    let runtime = tee.runtime_json();
    let jwk = tee.public_jwk();
    let b64 =
        |v: &Option<String>| conclave_attest::api::b64url_decode(v.as_deref().unwrap_or_default());
    let (n, e) = (b64(&jwk.n)?, b64(&jwk.e)?);
    let mut roots = TrustedRoots::empty();
    roots.add(sim.platform().trusted_root())?;
    // A release-signing certificate from the same CA, as the vault has.
    let ca = LocalCa::load_or_create(&dir.join("ca"))?;
    let ca_cert = ca.cert();
    let signing = ca.signing_cert(&dir.join("bound"), "release-signing")?;
    let release_signer =
        aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&conclave_net::read_pkcs8(&signing.key_pk8)?)
            .map_err(|e| anyhow::anyhow!("release-signing key: {e}"))?;
    let chain = conclave_pki::Cert::parse_pem_bundle(
        "release signing chain",
        &std::fs::read(&signing.chain_pem)?,
    )?;
    let x5c = serde_json::Value::Array(
        chain
            .iter()
            .map(|c| {
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &c.der).into()
            })
            .collect(),
    );
    let count = std::sync::atomic::AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for _ in 0..threads {
            handles.push(s.spawn(|| -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread().build()?;
                while start.elapsed() < duration {
                    let ev = evidence(sim, &runtime)?;
                    let request = AttestSevSnpVmRequest::new(&ev, &runtime, None);
                    let appraisal = conclave_attest::appraisal::appraise(
                        &request,
                        &roots,
                        &AppraisalPolicy {
                            allowed_platforms: [PlatformName::Sim].into(),
                            allow_debug: false,
                            min_tcb: None,
                            check_cert_validity: true,
                        },
                    )?;
                    let mut claims = conclave_attest::claims::token_claims(&appraisal);
                    claims.insert("iat".into(), 1.into());
                    claims.insert("exp".into(), 4_000_000_000u64.into());
                    let mut header = serde_json::Map::new();
                    header.insert("kid".into(), token_key.kid.clone().into());
                    let token = conclave_attest::jws::sign_rs256(
                        header,
                        &serde_json::Value::Object(claims),
                        &token_key.key,
                    )?;
                    rt.block_on(verifier.verify(&token))?;
                    let wrapped = conclave_kms::crypto::wrap(
                        &target.pkcs8,
                        &n,
                        &e,
                        conclave_kms::crypto::WrapAlgorithm::CkmRsaAesKeyWrap,
                    )?;
                    // The release JWS as the vault signs it (x5c, key_hsm transfer blob),
                    // opened by the same client code: chain and signature check, unwrap, key
                    // parse.
                    use conclave_kms::api;
                    let b64url = conclave_attest::api::b64url;
                    let key_hsm = api::KeyTransferBlob {
                        schema_version: "1.0".into(),
                        header: api::KeyTransferHeader {
                            kid: "TeeEncryptionKey".into(),
                            alg: "dir".into(),
                            enc: "CKM_RSA_AES_KEY_WRAP".into(),
                        },
                        ciphertext: b64url(&wrapped),
                        generator: "conclave-bench".into(),
                    };
                    let payload = api::KeyReleasePayload {
                        request: api::KeyReleaseEcho {
                            api_version: "7.4".into(),
                            enc: key_hsm.header.enc.clone(),
                            kid: "bound".into(),
                            nonce: None,
                        },
                        response: api::KeyReleaseResponse {
                            key: api::KeyBundle {
                                key: api::JsonWebKey {
                                    kid: "bound".into(),
                                    kty: "RSA-HSM".into(),
                                    key_ops: vec!["decrypt".into()],
                                    n: b64url(&n),
                                    e: b64url(&e),
                                    key_hsm: Some(b64url(
                                        &serde_json::to_vec(&key_hsm).expect("JSON"),
                                    )),
                                },
                                attributes: Default::default(),
                                tags: Default::default(),
                                release_policy: None,
                            },
                        },
                    };
                    let mut header = serde_json::Map::new();
                    header.insert("x5c".into(), x5c.clone());
                    let jws = conclave_attest::jws::sign_rs256(header, &payload, &release_signer)?;
                    open_release(&jws, ca_cert, tee.private_key())?;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a bound thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}
