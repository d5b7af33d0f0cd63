//! A workload runs analysis contracts end to end against the real attestation service and a
//! real vault: it attests each contract's digest and k, the owners' vaults release their keys
//! only for the contracts they approved, and a contract an owner did not approve is refused at
//! that owner's vault, with the reason in the run and in the vault's audit log. A run's result
//! leaves sealed to the contract's receivers, with a signed receipt that `conclave receipt
//! verify` checks against the contract and the result a receiver opens.

mod common;
use common::*;

use conclave_contract::Contract;
use conclave_contract::policy::OwnerTerms;
use conclave_data::dataset::VaultPublicKey;
use conclave_data::generator::{Generator, Party, schema};
use conclave_kms::policy::ReleasePolicy;
use conclave_workload::config::{DatasetConfig, PartyConfig};
use conclave_workload::contract_runs::ContractRunView;
use conclave_workload::identity::TeeIdentity;
use conclave_workload::release::ReleaseState;
use conclave_workload::service::{AnalysisState, Workload};

const PARTIES: [(Party, u64); 3] = [
    (Party::Contoso, 3_000),
    (Party::Fabrikam, 2_000),
    (Party::Woodgrove, 1_000),
];

const BIN: &str = env!("CARGO_BIN_EXE_conclave");

/// A party's keys: (party, approval private, approval public, receiver private, receiver public).
type Keys = (String, String, String, String, String);

/// A contract of `contracts/` for this test's vault and storage, with its parties' keys.
fn contract_text(name: &str, vault: &str, storage: &Path, keys: &[Keys]) -> String {
    let path = format!("{}/../../contracts/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(path).unwrap();
    let host = vault.trim_start_matches("https://");
    for (party, _, approval, _, receiver) in keys {
        text = text
            .replace(&format!("<{party}'s approval public key (PEM)>"), approval)
            .replace(&format!("<{party}'s receiver public key (PEM)>"), receiver)
            .replace(&format!("<{party}'s vault>"), host);
    }
    text.replace("<storage>", storage.to_str().unwrap())
}

/// `conclave receipt verify` on `bundle`, with `args` after it: (success, stdout, stderr).
fn receipt_verify(env: &Env, bundle: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .args(["receipt", "verify"])
        .arg(bundle)
        .args(["--jwks", &format!("{}/certs", env.attest_url)])
        .arg("--ca")
        .arg(env.ca.cert_path())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

async fn wait_final(w: &Workload) -> ContractRunView {
    for _ in 0..600 {
        let v = w.contract_run();
        if v.state.is_final() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the run did not end: {:?}", w.contract_run());
}

#[tokio::test(flavor = "multi_thread")]
async fn owners_keys_are_released_only_for_the_contracts_they_approved() {
    let env = env().await;
    let storage = env.dir.join("storage");
    let contracts = env.dir.join("contracts");
    std::fs::create_dir_all(&storage).unwrap();
    std::fs::create_dir_all(&contracts).unwrap();

    // Approval and receiver keys; the contracts filled in for this deployment.
    let keys: Vec<Keys> = ["contoso", "fabrikam", "woodgrove"]
        .iter()
        .map(|p| {
            let (private, public) = conclave_contract::approval::generate_key().unwrap();
            let (r_private, r_public) = conclave_contract::approval::generate_key().unwrap();
            (p.to_string(), private, public, r_private, r_public)
        })
        .collect();
    let mut digests = std::collections::BTreeMap::new();
    for name in ["partner-demographics", "contoso-salaries"] {
        let text = contract_text(name, &env.vault_url, &storage, &keys);
        std::fs::write(contracts.join(format!("{name}.toml")), &text).unwrap();
        let contract = Contract::parse(&text).unwrap();
        digests.insert(name, contract.clone());
    }
    // Everyone approves the demographics; nobody the salaries (Contoso's decision).
    let demographics = &digests["partner-demographics"];
    for (party, private, ..) in &keys {
        let jws =
            conclave_contract::approval::sign(demographics, party, private, 1_800_000_000).unwrap();
        std::fs::write(
            contracts.join(format!("partner-demographics.{party}.jws")),
            jws,
        )
        .unwrap();
    }

    // Each owner's key: its policy pins the workload's measurement and, for the partners'
    // data, the approved contract's digest and a floor for k.
    let workload_pin =
        ReleasePolicy::parse(env.policy(&good_measurement()).to_string().as_bytes()).unwrap();
    let admin = env.client(&env.admin);
    let analyst_token = admin
        .add_principal("woodgrove-workload", false)
        .await
        .unwrap();
    let token_file = env.dir.join("woodgrove-workload.token");
    std::fs::write(&token_file, &analyst_token).unwrap();
    let mut datasets = Vec::new();
    let mut woodgrove_owner = None;
    for (party, n) in PARTIES {
        let name = format!("{}-data", party.name());
        let policy = if party == Party::Woodgrove {
            workload_pin.clone()
        } else {
            OwnerTerms {
                digest: demographics.digest(),
                min_k: 10,
                max_epsilon: None,
            }
            .add_to(&workload_pin)
        };
        let owner = env
            .owner_with_key(party.name(), &name, &policy.to_json())
            .await;
        owner
            .grant(&name, "woodgrove-workload", &[Permission::Release])
            .await
            .unwrap();
        let key = owner.get_key(&name).await.unwrap();
        if party == Party::Woodgrove {
            woodgrove_owner = Some(owner.clone());
        }
        let public = VaultPublicKey::from_jwk(&serde_json::to_value(&key.key).unwrap()).unwrap();
        let url = storage.join(format!("{}.parquet", party.name()));
        let mut g = Generator::new(party, 11, n);
        conclave_data::dataset::write_encrypted(
            std::iter::from_fn(move || g.next_batch(1000).map(Ok)),
            schema(),
            &conclave_data::store::locate(url.to_str().unwrap()).unwrap(),
            &public,
            |_| {},
        )
        .await
        .unwrap();
        datasets.push(DatasetConfig {
            company: party.name().into(),
            display_name: party.name().into(),
            url: url.to_str().unwrap().into(),
            key: format!("{}/keys/{name}", env.vault_url),
            token_file: token_file.clone(),
        });
    }

    // Woodgrove's workload, attesting with the sim platform as the launched config.
    let config = PartyConfig::parse(&format!(
        "party = \"woodgrove\"\ndisplay_name = \"Woodgrove Bank\"\nlisten = \"127.0.0.1:0\"\nattestation_url = {:?}\nca_file = {:?}\ncontracts_dir = {:?}\nanalysis = true\ndatasets = []\n",
        env.attest_url,
        env.ca.cert_path(),
        contracts
    ))
    .unwrap();
    let config = PartyConfig { datasets, ..config };
    let identity = TeeIdentity::generate(Some(Platform::Sim), &[]).unwrap();
    let evidence: Arc<dyn conclave_tee::EvidenceSource> = Arc::new(SignedEvidence {
        sim: env.sim.clone(),
        config: GOOD_CONFIG.to_vec(),
    });
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let w = Workload::new(
        Arc::new(config),
        identity,
        Some(evidence.clone()),
        env.http.clone(),
        env.ca.cert().clone(),
        None,
        stopped,
    );

    // The list says who approved what.
    let list = w.contracts().unwrap();
    assert!(list.broken.is_empty(), "{:?}", list.broken);
    let listed = |id: &str| list.contracts.iter().find(|c| c.id == id).unwrap().clone();
    assert!(listed("partner-demographics").approved);
    let salaries = listed("contoso-salaries");
    assert!(!salaries.approved);
    assert_eq!(salaries.approvals[0].status, "not-approved");
    assert_eq!(salaries.digest, digests["contoso-salaries"].digest());

    // The approved contract runs: every key released, every query answered.
    w.start_contract_run("partner-demographics", "tester")
        .unwrap();
    let run = wait_final(&w).await;
    assert_eq!(run.state, AnalysisState::Done, "{:?}", run.error);
    assert!(
        run.releases
            .iter()
            .all(|r| matches!(r.release, ReleaseState::Released { .. })),
        "{:?}",
        run.releases
    );
    let result = run.result.unwrap();
    assert_eq!(result.digest, demographics.digest());
    assert_eq!(result.queries.len(), demographics.queries.len());
    let total: u64 = result
        .queries
        .iter()
        .find(|q| q.name == "companies")
        .unwrap()
        .rows
        .iter()
        .map(|r| r["records"].as_u64().unwrap())
        .sum();
    assert_eq!(total, PARTIES.iter().map(|(_, n)| n).sum::<u64>());

    // What was read is named (ciphertext hashes, key versions); the result was sealed to the
    // contract's three receivers, Woodgrove among them (so its page shows the result).
    assert_eq!(run.sealed_to, ["contoso", "fabrikam", "woodgrove"]);
    assert!(run.receipt_available && run.result_withheld.is_none());
    assert_eq!(run.inputs.len(), 3);
    for (input, (party, n)) in run.inputs.iter().zip(PARTIES) {
        assert_eq!(input.company, party.name());
        assert_eq!(input.records, n);
        assert_eq!(input.sha256.len(), 64);
        assert!(
            input
                .key
                .starts_with(&format!("{}/keys/{}-data/", env.vault_url, party.name())),
            "{}",
            input.key
        );
    }

    // The receipt and sealed results: each receiver opens its own and gets the very result,
    // checked against the contract it approved.
    let bundle = w.contract_receipt().unwrap();
    assert_eq!(bundle.sealed.len(), 3);
    let bundle_file = env.dir.join("contract-receipt.json");
    std::fs::write(&bundle_file, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let contract_file = contracts.join("partner-demographics.toml");
    for (party, _, _, receiver_private, _) in &keys {
        let key_file = env.dir.join(format!("{party}-receiver.key"));
        std::fs::write(&key_file, receiver_private).unwrap();
        let opened = env.dir.join(format!("{party}-result.json"));
        let (ok, stdout, stderr) = receipt_verify(
            &env,
            &bundle_file,
            &[
                "--contract",
                contract_file.to_str().unwrap(),
                "--receiver-key",
                key_file.to_str().unwrap(),
                "--out",
                opened.to_str().unwrap(),
            ],
        );
        assert!(ok, "{stdout}{stderr}");
        assert!(
            stdout.contains(&format!("opened as:    {party}")),
            "{stdout}"
        );
        assert!(stdout.contains("SIMULATED"), "{stdout}");
        let opened: Value = serde_json::from_slice(&std::fs::read(&opened).unwrap()).unwrap();
        assert_eq!(opened, serde_json::to_value(&result).unwrap());
    }
    // Checked against another contract: refused, with what differs.
    let (ok, _, stderr) = receipt_verify(
        &env,
        &bundle_file,
        &[
            "--contract",
            contracts.join("contoso-salaries.toml").to_str().unwrap(),
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("it is not a run of") && stderr.contains("contract digest"),
        "{stderr}"
    );
    // A key that is no receiver's (an approval key) opens nothing.
    let approval_key = env.dir.join("contoso-approval.key");
    std::fs::write(&approval_key, &keys[0].1).unwrap();
    let (ok, _, stderr) = receipt_verify(
        &env,
        &bundle_file,
        &["--receiver-key", approval_key.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(stderr.contains("none of the 3 sealed results"), "{stderr}");
    // A sealed result swapped for another plaintext sealed to the same receiver (base-mode HPKE
    // lets anyone seal): it opens, but it is not what the receipt signs.
    let mut forged = bundle.clone();
    forged.sealed[0] = conclave_contract::sealing::seal(
        b"{\"queries\":[]}",
        "contoso",
        &keys[0].4,
        &demographics.digest(),
    )
    .unwrap();
    let forged_file = env.dir.join("forged.json");
    std::fs::write(&forged_file, serde_json::to_vec(&forged).unwrap()).unwrap();
    let (ok, _, stderr) = receipt_verify(
        &env,
        &forged_file,
        &[
            "--receiver-key",
            env.dir.join("contoso-receiver.key").to_str().unwrap(),
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("is not the one the receipt signs"),
        "{stderr}"
    );

    // The unapproved one is refused at Contoso's vault, which says why; nothing runs.
    w.start_contract_run("contoso-salaries", "tester").unwrap();
    let run = wait_final(&w).await;
    assert_eq!(run.state, AnalysisState::Failed);
    assert!(run.result.is_none());
    assert!(w.contract_receipt().is_none() && !run.receipt_available);
    let ReleaseState::Denied { by, reason, .. } = &run.releases[0].release else {
        panic!("{:?}", run.releases);
    };
    assert_eq!(by, "vault");
    assert!(reason.contains("x-ms-runtime.contract.digest"), "{reason}");
    let error = run.error.unwrap();
    assert!(
        error.contains("Contoso's vault refused") && error.contains("x-ms-runtime.contract.digest"),
        "{error}"
    );
    let audit = admin.audit(0).await.unwrap();
    assert!(audit.value.iter().any(|e| {
        e.event.action == "release"
            && e.event.outcome == "denied"
            && e.event
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("x-ms-runtime.contract.digest"))
    }));

    // The built-in analysis, which no owner bound its key to, is refused at the partners' vaults:
    // their keys go to this workload only while it attests a contract they approved.
    w.identity
        .attest_once(evidence.as_ref(), &env.http, &env.attest_url)
        .await
        .unwrap();
    w.start_analysis("tester").unwrap();
    let analysis = loop {
        let v = w.analysis();
        if v.state.is_final() {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(analysis.state, AnalysisState::Failed);
    assert!(analysis.result.is_none());
    let error = analysis.error.unwrap();
    assert!(
        error.contains("key release denied") && error.contains("x-ms-runtime.contract.digest"),
        "{error}"
    );

    // Differential privacy end to end: a contract over Woodgrove's own records with ε = 3 per
    // run, against a key whose owner allows ε = 4 in all. The first run is noised (OpenDP) and
    // paid for at the vault; the second would overspend and is refused there, with what is left.
    let mut private = demographics.clone();
    private.name = "woodgrove-private-countries".into();
    private.inputs.retain(|i| i.provider == "woodgrove");
    private.queries.truncate(1);
    private.queries[0].name = "countries".into();
    private.queries[0].sql = "SELECT country, COUNT(*) AS records, AVG(salary) AS average_salary FROM woodgrove GROUP BY country".into();
    private.output.k = 20;
    private.output.differential_privacy = Some(conclave_contract::DifferentialPrivacy {
        mechanism: conclave_contract::Mechanism::Laplace,
        epsilon: 3.0,
        delta: 1e-6,
        bounds: [("salary".to_string(), [0.0, 300_000.0])].into(),
    });
    std::fs::write(
        contracts.join("woodgrove-private.toml"),
        serde_json::to_string_pretty(&private).unwrap(),
    )
    .unwrap();
    let woodgrove_owner = woodgrove_owner.unwrap();
    woodgrove_owner
        .put_privacy_budget("woodgrove-data", 4.0)
        .await
        .unwrap();
    w.start_contract_run("woodgrove-private", "tester").unwrap();
    let run = wait_final(&w).await;
    assert_eq!(run.state, AnalysisState::Done, "{:?}", run.error);
    let q = &run.result.unwrap().queries[0];
    assert!(q.noise.starts_with("laplace (OpenDP)"), "{}", q.noise);
    assert!(!q.rows.is_empty());
    let budget = woodgrove_owner
        .get_privacy_budget("woodgrove-data")
        .await
        .unwrap();
    assert_eq!((budget.spent_epsilon, budget.releases), (3.0, 1));
    w.start_contract_run("woodgrove-private", "tester").unwrap();
    let run = wait_final(&w).await;
    assert_eq!(run.state, AnalysisState::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains("privacy budget exhausted") && error.contains("1 left of 4"),
        "{error}"
    );
    let budget = woodgrove_owner
        .get_privacy_budget("woodgrove-data")
        .await
        .unwrap();
    assert_eq!(budget.releases, 1);

    // Unknown contracts and path tricks are refused before anything happens.
    assert!(w.start_contract_run("../contracts/x", "tester").is_err());
    assert!(w.start_contract_run("nope", "tester").is_err());
}
