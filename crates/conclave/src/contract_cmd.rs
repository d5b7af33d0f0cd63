//! `conclave contract`: analysis contracts (see `conclave_contract`). An owner makes an
//! approval key once (`keygen`), reads a contract (`show`), approves its digest (`approve`,
//! which also prints the release policy that binds the owner's key to it), and anyone checks
//! the approvals offline (`verify`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use conclave_contract::approval::{self, ApprovalStatus};
use conclave_contract::policy::OwnerTerms;
use conclave_contract::{Contract, Role};
use conclave_kms::policy::ReleasePolicy;

#[derive(Subcommand)]
pub enum ContractCommand {
    /// Make an approval key: writes the private key (PKCS#8 PEM, mode 0600) to --out and prints
    /// the public key, which goes into the contract as the party's `approval_key`.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a starting contract to --out (an example to edit: parties, inputs, queries, rules).
    New {
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a contract and print what it says, with its digest.
    Show {
        contract: PathBuf,
        /// Print the canonical JSON (RFC 8785) that the digest is taken over instead.
        #[arg(long)]
        canonical: bool,
    },
    /// Print a contract's digest (SHA-256 of its canonical JSON, hex).
    Digest { contract: PathBuf },
    /// Approve a contract as one of its data providers: signs its digest with the party's
    /// approval key. With --policy, also prints the release policy for the party's key: that
    /// policy's conditions (which pin the workload) and the contract's.
    Approve {
        contract: PathBuf,
        /// The approving party's id.
        #[arg(long)]
        party: String,
        /// The party's approval key (PKCS#8 PEM, from `conclave contract keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the approval (a compact JWS); default <party>.approval.jws beside
        /// the contract.
        #[arg(long)]
        out: Option<PathBuf>,
        /// A release policy that pins the workload (from `conclave measure`): printed back with
        /// the contract's digest and the owner's floors added to each authority's conditions.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The smallest k the owner accepts (default: the contract's).
        #[arg(long, requires = "policy")]
        min_k: Option<u64>,
        /// The largest ε per run the owner accepts; the policy then requires differential
        /// privacy (default: the contract's ε, when it has differential privacy).
        #[arg(long, requires = "policy")]
        max_epsilon: Option<f64>,
    },
    /// Check approvals offline against the contract: each one's signature (with the approval
    /// key the contract lists for its party) and digest; says who approved and who did not.
    /// Exits 1 unless every data provider approved and every approval given is valid.
    Verify {
        contract: PathBuf,
        /// Approval files (compact JWS).
        approvals: Vec<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn read_contract(path: &PathBuf) -> anyhow::Result<Contract> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Contract::parse(&text).with_context(|| format!("in {}", path.display()))
}

const STARTER: &str = include_str!("contract_starter.toml");

pub fn run(cmd: ContractCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ContractCommand::Keygen { out } => {
            if out.exists() {
                bail!(
                    "{} exists: choose another --out (a key is never overwritten)",
                    out.display()
                );
            }
            let (private, public) = approval::generate_key()?;
            conclave_pki::write_secret(&out, private.as_bytes())?;
            print!("{public}");
            Ok(ExitCode::SUCCESS)
        }
        ContractCommand::New { out } => {
            if out.exists() {
                bail!("{} exists: choose another --out", out.display());
            }
            std::fs::write(&out, STARTER).with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "wrote {}: fill in each data provider's approval_key (conclave contract keygen), the inputs' URLs and keys, and the queries; then conclave contract show {}",
                out.display(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        ContractCommand::Show {
            contract,
            canonical,
        } => {
            let c = read_contract(&contract)?;
            if canonical {
                println!("{}", String::from_utf8_lossy(&c.canonical_json()));
                return Ok(ExitCode::SUCCESS);
            }
            show(&c);
            Ok(ExitCode::SUCCESS)
        }
        ContractCommand::Digest { contract } => {
            println!("{}", read_contract(&contract)?.digest());
            Ok(ExitCode::SUCCESS)
        }
        ContractCommand::Approve {
            contract: path,
            party,
            key,
            out,
            policy,
            min_k,
            max_epsilon,
        } => {
            let c = read_contract(&path)?;
            // The owner's terms are checked before anything is signed: an approval is not left
            // behind for a contract the owner's limits refuse.
            let release_policy = match policy {
                Some(policy) => Some(owner_policy(&c, &policy, min_k, max_epsilon)?),
                None => None,
            };
            let private = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let jws = approval::sign(&c, &party, &private, now)?;
            let out = out.unwrap_or_else(|| path.with_file_name(format!("{party}.approval.jws")));
            if out.exists() {
                bail!(
                    "{} exists: choose another --out (an approval is never overwritten)",
                    out.display()
                );
            }
            std::fs::write(&out, format!("{jws}\n"))
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "{party} approves {} ({}): {}",
                c.name,
                c.digest(),
                out.display()
            );
            if let Some(p) = release_policy {
                eprintln!(
                    "release policy for {party}'s key (conclave key policy <name> --policy <file>):"
                );
                println!("{}", serde_json::to_string_pretty(&p.to_json())?);
            }
            Ok(ExitCode::SUCCESS)
        }
        ContractCommand::Verify {
            contract,
            approvals,
            json,
        } => {
            let c = read_contract(&contract)?;
            let mut texts = Vec::new();
            for a in &approvals {
                texts.push(
                    std::fs::read_to_string(a)
                        .with_context(|| format!("reading {}", a.display()))?,
                );
            }
            let status = ApprovalStatus::of(&c, &texts);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "contract": c.name,
                        "digest": c.digest(),
                        "approved": status.approved.iter().map(|a| serde_json::json!({"party": a.party, "iat": a.iat})).collect::<Vec<_>>(),
                        "missing": status.missing,
                        "invalid": status.invalid.iter().map(|(i, e)| serde_json::json!({"file": approvals[*i].display().to_string(), "error": e.to_string()})).collect::<Vec<_>>(),
                        "complete": status.complete(),
                    }))?
                );
            } else {
                println!("{} {}", c.name, c.digest());
                for a in &status.approved {
                    println!("  approved      {}", a.party);
                }
                for m in &status.missing {
                    println!("  not approved  {m}");
                }
                for (i, e) in &status.invalid {
                    println!("  invalid       {}: {e}", approvals[*i].display());
                }
            }
            Ok(if status.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The owner's release policy: `policy_file` (a policy pinning the workload, or `conclave
/// measure --json` output) with the contract's digest and the owner's floors added.
fn owner_policy(
    c: &Contract,
    policy_file: &PathBuf,
    min_k: Option<u64>,
    max_epsilon: Option<f64>,
) -> anyhow::Result<ReleasePolicy> {
    let text =
        std::fs::read(policy_file).with_context(|| format!("reading {}", policy_file.display()))?;
    let mut value: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not JSON", policy_file.display()))?;
    // `conclave measure --json` prints {values, policy}: take its policy.
    if let Some(p) = value.get("policy").cloned() {
        value = p;
    }
    let base = ReleasePolicy::from_value(&value)
        .with_context(|| format!("in {}", policy_file.display()))?;
    let min_k = min_k.unwrap_or(c.output.k);
    if min_k > c.output.k {
        bail!(
            "this contract releases groups of {} or more, below your floor of {min_k}: no workload running it could meet the policy (ask for a contract with k >= {min_k})",
            c.output.k
        );
    }
    if let Some(max) = max_epsilon
        && !(max.is_finite() && max > 0.0)
    {
        bail!("--max-epsilon {max} must be a finite number above 0");
    }
    let dp = c.output.differential_privacy.as_ref().map(|d| d.epsilon);
    let max_epsilon = max_epsilon.or(dp);
    if let (Some(max), Some(eps)) = (max_epsilon, dp)
        && eps > max
    {
        bail!("this contract spends epsilon {eps} per run, above your ceiling of {max}");
    }
    if max_epsilon.is_some() && dp.is_none() {
        bail!("this contract has no differential privacy, and --max-epsilon requires it");
    }
    Ok(OwnerTerms {
        digest: c.digest(),
        min_k,
        max_epsilon,
    }
    .add_to(&base))
}

fn show(c: &Contract) {
    println!("contract {}  digest {}", c.name, c.digest());
    if !c.description.is_empty() {
        println!("  {}", c.description);
    }
    println!("parties:");
    for p in &c.parties {
        let roles: Vec<&str> = p
            .roles
            .iter()
            .map(|r| match r {
                Role::DataProvider => "data provider",
                Role::Analyst => "analyst",
                Role::ResultReceiver => "result receiver",
            })
            .collect();
        println!("  {:<12} {:<24} {}", p.id, p.display_name, roles.join(", "));
        // What each owner compares, out of band, with its own key before approving.
        if let Some(key) = &p.approval_key
            && let Ok(fp) = approval::key_fingerprint(key)
        {
            println!("  {:<12} approval key sha256:{fp}", "");
        }
    }
    println!("inputs:");
    for i in &c.inputs {
        let cols: Vec<String> = i
            .schema
            .iter()
            .map(|c| {
                format!(
                    "{} {}{}",
                    c.name,
                    c.data_type,
                    if c.nullable { "?" } else { "" }
                )
            })
            .collect();
        println!("  {} (from {}): {}", i.table, i.provider, i.url);
        println!("    key {}", i.key);
        println!("    columns {}", cols.join(", "));
    }
    println!("queries:");
    for q in &c.queries {
        println!("  {}:", q.name);
        for line in q.sql.trim().lines() {
            println!("    {line}");
        }
    }
    let o = &c.output;
    println!("output:");
    println!(
        "  {}groups of fewer than {} records withheld",
        if o.aggregate_only {
            "aggregates only; "
        } else {
            ""
        },
        o.k
    );
    if !o.forbidden_columns.is_empty() {
        println!("  never in a result: {}", o.forbidden_columns.join(", "));
    }
    match &o.differential_privacy {
        Some(dp) => {
            println!(
                "  differential privacy: {:?}, epsilon {} and delta {} per run",
                dp.mechanism, dp.epsilon, dp.delta
            );
            for (column, [lower, upper]) in &dp.bounds {
                println!("    {column} clamped to [{lower}, {upper}] before it is summed");
            }
        }
        None => println!("  no differential privacy: repeated runs can reveal more than one does"),
    }
}
