//! `conclave receipt verify`: checks a result receipt offline — of the built-in analysis (a
//! compact JWS) or of an analysis contract's run (the JSON bundle a workload's page downloads:
//! the receipt and the result sealed to each receiver).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use conclave_contract::Contract;
use conclave_contract::receipt::{ContractOutcome, ContractReceiptBundle};
use conclave_protocol::receipt::{CONTRACT_RECEIPT_TYPE, VerifiedReceipt};

use crate::party_cmd::AttestedBy;

#[derive(Subcommand)]
pub enum ReceiptCommand {
    /// Check a result receipt offline: its attestation token against the attestation service's
    /// keys, its signature against the attested TEE's key. Prints what produced it, from what.
    /// For a contract run it also checks, with --contract, that the run is of that contract
    /// (digest, privacy parameters, receivers, inputs) and, with --receiver-key, opens the
    /// receiver's sealed result and checks it is the one the receipt signs.
    Verify {
        /// The receipt: a compact JWS (the built-in analysis), or a contract run's bundle
        /// (`contract-receipt.json`: the receipt and the sealed results).
        file: PathBuf,
        #[command(flatten)]
        attested_by: AttestedBy,
        /// A contract run: the contract (TOML or JSON) the run must be of.
        #[arg(long)]
        contract: Option<PathBuf>,
        /// A contract run: the result receiver's private key (PKCS#8 PEM, from `conclave
        /// contract keygen`), to open its sealed result.
        #[arg(long)]
        receiver_key: Option<PathBuf>,
        /// With --receiver-key: write the opened result (JSON) here.
        #[arg(long, requires = "receiver_key")]
        out: Option<PathBuf>,
        /// Print the verified receipt as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn rejected(why: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("receipt REJECTED: {why}");
    Ok(ExitCode::FAILURE)
}

/// What every verified receipt says of its origin, as JSON fields.
fn origin_json<R>(verified: &VerifiedReceipt<R>, measurement: &str) -> serde_json::Value {
    serde_json::json!({
        "issued_at": verified.issued_at,
        "party": verified.party,
        "platform": verified.platform(),
        "measurement": measurement,
        "issuer": verified.token_claims["iss"],
        "inputs": verified.inputs,
    })
}

/// What every verified receipt says of its origin, printed.
fn print_origin<R>(verified: &VerifiedReceipt<R>, measurement: &str) {
    let platform = verified.platform().unwrap_or("?");
    let simulated = if platform == "sim" {
        " (SIMULATED: no hardware protection)"
    } else {
        ""
    };
    println!("  run by:       {}", verified.party);
    println!("  platform:     {platform}{simulated}");
    println!("  measurement:  {measurement}");
    println!("  attested by:  {}", verified.token_claims["iss"]);
    println!("  signed at:    {} (Unix time)", verified.issued_at);
}

/// The attested launch measurement, checked against `--expect-measurement`.
fn measurement_of<R>(
    verified: &VerifiedReceipt<R>,
    expect: Option<&str>,
) -> Result<String, String> {
    let measurement = verified.measurement().unwrap_or_default().to_string();
    match expect {
        Some(want) if !want.eq_ignore_ascii_case(&measurement) => Err(format!(
            "produced by measurement {measurement}, expected {want}"
        )),
        _ => Ok(measurement),
    }
}

pub async fn run(cmd: ReceiptCommand) -> anyhow::Result<ExitCode> {
    let ReceiptCommand::Verify {
        file,
        attested_by,
        contract,
        receiver_key,
        out,
        json,
    } = cmd;
    let text = read(&file)?;
    let verifier = attested_by.verifier()?;
    let expect_measurement = attested_by.expect_measurement.as_deref();
    let bundle = if text.trim_start().starts_with('{') {
        Some(
            serde_json::from_str::<ContractReceiptBundle>(&text).with_context(|| {
                format!(
                    "{} is JSON but not a contract run's receipt bundle (receipt, sealed)",
                    file.display()
                )
            })?,
        )
    } else {
        None
    };
    let receipt = bundle
        .as_ref()
        .map_or(text.as_str(), |b| b.receipt.as_str());
    let is_contract =
        conclave_protocol::receipt::receipt_type(receipt).as_deref() == Some(CONTRACT_RECEIPT_TYPE);
    if !is_contract {
        if contract.is_some() || receiver_key.is_some() {
            return rejected(
                "--contract and --receiver-key are for a contract run's receipt; this is a receipt of the built-in analysis",
            );
        }
        return analysis(receipt, &verifier, expect_measurement, json).await;
    }
    let verified = match conclave_protocol::receipt::verify_as::<ContractOutcome>(
        receipt,
        CONTRACT_RECEIPT_TYPE,
        &verifier,
    )
    .await
    {
        Ok(v) => v,
        Err(e) => return rejected(e),
    };
    let measurement = match measurement_of(&verified, expect_measurement) {
        Ok(m) => m,
        Err(why) => return rejected(why),
    };
    let outcome = &verified.result;
    if let Some(why) = outcome.attestation_discrepancy(&verified.token_claims) {
        return rejected(why);
    }
    if let Some(path) = &contract {
        let c = Contract::parse(&read(path)?).with_context(|| format!("in {}", path.display()))?;
        let problems = outcome.discrepancies(&c, &verified.inputs);
        if !problems.is_empty() {
            return rejected(format!(
                "it is not a run of {}: {}",
                path.display(),
                problems.join("; ")
            ));
        }
    }
    let mut opened = None;
    if let Some(key_path) = &receiver_key {
        let Some(bundle) = &bundle else {
            return rejected(
                "--receiver-key needs the run's bundle (contract-receipt.json), which holds the sealed results; this file is the receipt alone",
            );
        };
        let key = read(key_path)?;
        let found = bundle.sealed.iter().find_map(|s| {
            conclave_contract::sealing::open(s, &key, &outcome.digest)
                .ok()
                .map(|plain| (s.receiver.clone(), plain))
        });
        let Some((receiver, plaintext)) = found else {
            return rejected(format!(
                "none of the {} sealed results ({}) opens with {}",
                bundle.sealed.len(),
                bundle
                    .sealed
                    .iter()
                    .map(|s| s.receiver.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                key_path.display()
            ));
        };
        let digest = conclave_contract::receipt::output_digest(&plaintext);
        if digest != outcome.output_sha256 {
            return rejected(format!(
                "the result sealed to {receiver} (SHA-256 {digest}) is not the one the receipt signs ({})",
                outcome.output_sha256
            ));
        }
        let result: serde_json::Value =
            serde_json::from_slice(&plaintext).context("the opened result is not JSON")?;
        if let Some(out) = &out {
            std::fs::write(out, serde_json::to_string_pretty(&result)? + "\n")
                .with_context(|| format!("writing {}", out.display()))?;
        }
        opened = Some((receiver, result));
    }
    if json {
        let mut v = origin_json(&verified, &measurement);
        v["type"] = CONTRACT_RECEIPT_TYPE.into();
        v["outcome"] = serde_json::to_value(outcome)?;
        v["checked_against_contract"] = contract.is_some().into();
        v["opened_by"] = serde_json::to_value(opened.as_ref().map(|(r, _)| r))?;
        v["result"] = serde_json::to_value(opened.as_ref().map(|(_, v)| v))?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("receipt OK (analysis contract run)");
    println!(
        "  contract:     {}  digest {}",
        outcome.contract, outcome.digest
    );
    if let Some(path) = &contract {
        println!("                matches {}", path.display());
    }
    print_origin(&verified, &measurement);
    let p = &outcome.privacy;
    match (p.epsilon, p.delta) {
        (Some(e), Some(d)) => println!("  privacy:      k = {}, epsilon = {e}, delta = {d}", p.k),
        (Some(e), None) => println!("  privacy:      k = {}, epsilon = {e}", p.k),
        _ => println!("  privacy:      k = {} (no differential privacy)", p.k),
    }
    for i in &verified.inputs {
        println!(
            "  input:        {} {} records, sha256 {} ({}, key {})",
            i.company, i.records, i.sha256, i.dataset, i.key
        );
    }
    for q in &outcome.queries {
        println!(
            "  query:        {} {} rows, {} groups withheld (< k), noise {}",
            q.name, q.rows, q.suppressed_groups, q.noise
        );
    }
    println!("  sealed to:    {}", outcome.receivers.join(", "));
    println!("  result:       sha256 {}", outcome.output_sha256);
    if let Some((receiver, _)) = &opened {
        println!("  opened as:    {receiver} (its sealed result matches the receipt)");
        if let Some(out) = &out {
            println!("  written to:   {}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A receipt of the built-in analysis.
async fn analysis(
    receipt: &str,
    verifier: &conclave_attest::verify::TokenVerifier,
    expect_measurement: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let verified = match conclave_workload::receipt::verify(receipt, verifier).await {
        Ok(v) => v,
        Err(e) => return rejected(e),
    };
    let measurement = match measurement_of(&verified, expect_measurement) {
        Ok(m) => m,
        Err(why) => return rejected(why),
    };
    if json {
        let mut v = origin_json(&verified, &measurement);
        v["result"] = serde_json::to_value(&verified.result)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("receipt OK");
        print_origin(&verified, &measurement);
        for i in &verified.inputs {
            println!(
                "  input:        {} {} records, sha256 {} ({})",
                i.company, i.records, i.sha256, i.dataset
            );
        }
        println!(
            "  result:       {} records, k = {}",
            verified.result.total_records, verified.result.k
        );
    }
    Ok(ExitCode::SUCCESS)
}
