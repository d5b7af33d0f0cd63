//! `conclave data`: generate records, encrypt them under a vault key into an object store,
//! inspect what storage holds.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use conclave_data::dataset::{self, DataError, PrivateKeyUnwrapper, VaultPublicKey};
use conclave_data::generator::{Generator, Party, schema};
use conclave_data::store::locate;
use futures::StreamExt as _;

use crate::progress::Progress;

const BATCH: usize = 64 * 1024;

#[derive(Subcommand)]
pub enum DataCommand {
    /// Generate deterministic synthetic records (streamed, constant memory).
    Generate {
        #[arg(long)]
        party: Party,
        #[arg(long, default_value_t = 800)]
        records: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file: .csv or .parquet (plaintext; encrypt with `data encrypt`).
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Encrypt records (.csv or .parquet) into an encrypted Parquet dataset at a URL (a path,
    /// file://, az:// or s3://), needing only the vault key's public part.
    Encrypt {
        /// A public JWK / key bundle file, or a vault key id (https://<vault>/keys/<name>[/<version>])
        /// fetched with --token and --ca.
        #[arg(long)]
        key: String,
        #[arg(long, env = "CONCLAVE_VAULT_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long, env = "CONCLAVE_CA")]
        ca: Option<PathBuf>,
        #[arg(long, short)]
        input: PathBuf,
        #[arg(long, short)]
        out: String,
    },
    /// Move an encrypted dataset to its vault key's latest version (after `key rotate`) without
    /// re-encrypting it: the vault re-wraps the footer key's material (never handing the data
    /// key out) and only the file's tail is rewritten. Needs the key owner's (or an admin's)
    /// vault token. An owner holding the old key's private part may instead re-wrap offline
    /// with --key-file and --to.
    Rewrap {
        url: String,
        /// The vault key version the file is under (https://<vault>/keys/<name>/<version>), when
        /// its masterKeyID does not say (PyArrow files name keys without a vault or version).
        #[arg(long, conflicts_with = "key_file")]
        from: Option<String>,
        /// Offline: the PKCS#8 private key the file is under (no vault is asked).
        #[arg(long, requires = "to")]
        key_file: Option<PathBuf>,
        /// Offline: the key to move to, a public JWK / key bundle file or a vault key id.
        #[arg(long, requires = "key_file")]
        to: Option<String>,
        #[arg(long, env = "CONCLAVE_VAULT_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long, env = "CONCLAVE_CA")]
        ca: Option<PathBuf>,
    },
    /// Show what can be known about a dataset without its key; with --key-file (the vault key's
    /// PKCS#8 private key, as only the owner has it) also decrypt a sample.
    Inspect {
        url: String,
        #[arg(long)]
        key_file: Option<PathBuf>,
        #[arg(long, default_value_t = 5)]
        sample: usize,
    },
}

/// What the inspection means for whoever holds only the file.
fn note(i: &dataset::Inspection) -> String {
    if !i.encrypted {
        return "not encrypted: anyone with the file can read it".into();
    }
    let plain: Vec<&str> = i
        .columns
        .iter()
        .flatten()
        .filter(|c| c.encryption == "none")
        .map(|c| c.column.as_str())
        .collect();
    match (i.footer.as_str(), &i.columns) {
        _ if !plain.is_empty() => format!(
            "encrypted, but columns {} are stored in plaintext: anyone with the file can read them, and Conclave's workloads refuse to read them",
            plain.join(", ")
        ),
        ("PARE", None) => {
            "footer encrypted: schema, row count and column protection need the key".into()
        }
        ("PARE", Some(_)) => "footer and every column encrypted".into(),
        _ => "every column encrypted; the footer is plaintext (signed): schema, row count and the statistics of encrypted columns' pages stay hidden, the column names and row counts do not".into(),
    }
}

/// Up to `n` rows of a batch, each a JSON object of the cells' display text.
fn rows_as_text(
    batch: &arrow_array::RecordBatch,
    n: usize,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let options = arrow_cast::display::FormatOptions::default();
    let formatters = batch
        .columns()
        .iter()
        .map(|c| arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    let schema = batch.schema();
    Ok((0..batch.num_rows().min(n))
        .map(|row| {
            let obj: serde_json::Map<String, serde_json::Value> = schema
                .fields()
                .iter()
                .zip(&formatters)
                .map(|(f, fmt)| (f.name().clone(), fmt.value(row).to_string().into()))
                .collect();
            obj.into()
        })
        .collect())
}

async fn public_key(
    key: &str,
    token: Option<&str>,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<VaultPublicKey> {
    let jwk: serde_json::Value = if key.starts_with("https://") {
        let (vault, rest) = key
            .split_once("/keys/")
            .context("a vault key id looks like https://<vault>/keys/<name>")?;
        let name = rest.split('/').next().unwrap_or_default();
        let token = read_token(token)?;
        let bundle =
            conclave_kms::client::VaultClient::new(conclave_net::client(ca)?, vault, &token)
                .get_key(name)
                .await?;
        serde_json::to_value(&bundle.key)?
    } else {
        let text = std::fs::read(key).with_context(|| format!("reading the key file {key}"))?;
        serde_json::from_slice(&text).with_context(|| format!("{key} is not a JWK"))?
    };
    Ok(VaultPublicKey::from_jwk(&jwk)?)
}

/// A bearer token given as text, or as `@file`.
fn read_token(token: Option<&str>) -> anyhow::Result<String> {
    let token = token.context("talking to the vault needs --token (or CONCLAVE_VAULT_TOKEN)")?;
    Ok(match token.strip_prefix('@') {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading {p}"))?
            .trim()
            .to_string(),
        None => token.to_string(),
    })
}

/// (vault URL, key name, version) of `https://<vault>/keys/<name>/<version>`.
fn versioned_key_id(kid: &str) -> Option<(&str, &str, &str)> {
    let (vault, rest) = kid.split_once("/keys/")?;
    let (name, version) = rest.split_once('/')?;
    (vault.starts_with("https://")
        && !name.is_empty()
        && !version.is_empty()
        && !version.contains('/'))
    .then_some((vault, name, version))
}

fn input_batches(
    input: &PathBuf,
) -> anyhow::Result<Box<dyn Iterator<Item = Result<arrow_array::RecordBatch, DataError>>>> {
    let file =
        std::fs::File::open(input).with_context(|| format!("reading {}", input.display()))?;
    match input.extension().and_then(|e| e.to_str()) {
        Some("csv") => {
            let reader = arrow_csv::ReaderBuilder::new(schema())
                .with_header(true)
                .with_batch_size(BATCH)
                .build(file)?;
            Ok(Box::new(reader.map(|b| {
                b.map_err(|e| DataError::Input(format!("CSV: {e}")))
            })))
        }
        Some("parquet") => {
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?
                    .with_batch_size(BATCH)
                    .build()?;
            Ok(Box::new(reader.map(|b| {
                b.map_err(|e| DataError::Input(format!("Parquet: {e}")))
            })))
        }
        _ => bail!("{}: give a .csv or .parquet file", input.display()),
    }
}

pub async fn run(cmd: DataCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DataCommand::Generate {
            party,
            records,
            seed,
            out,
        } => {
            if !(10..=100_000_000).contains(&records) {
                bail!("--records must be between 10 and 100000000");
            }
            let mut generator = Generator::new(party, seed, records);
            let mut progress = Progress::new(&format!("generating {}", party.name()), records);
            let mut done = 0u64;
            match out.extension().and_then(|e| e.to_str()) {
                Some("csv") => {
                    let file = std::io::BufWriter::new(
                        std::fs::File::create(&out)
                            .with_context(|| format!("creating {}", out.display()))?,
                    );
                    let mut writer = arrow_csv::WriterBuilder::new()
                        .with_header(true)
                        .build(file);
                    while let Some(batch) = generator.next_batch(BATCH) {
                        writer.write(&batch)?;
                        done += batch.num_rows() as u64;
                        progress.set(done);
                    }
                }
                Some("parquet") => {
                    let loc = locate(out.to_str().context("the output path is not UTF-8")?)?;
                    let batches = std::iter::from_fn(move || generator.next_batch(BATCH).map(Ok));
                    dataset::write_plain(batches, schema(), &loc, |n| progress.set(n)).await?;
                }
                _ => bail!("{}: the output must end in .csv or .parquet", out.display()),
            }
            progress.finish();
            eprintln!(
                "wrote {records} {} records to {}",
                party.name(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Encrypt {
            key,
            token,
            ca,
            input,
            out,
        } => {
            let public = public_key(&key, token.as_deref(), ca.as_deref()).await?;
            let loc = locate(&out)?;
            let batches = input_batches(&input)?;
            let size = std::fs::metadata(&input).map(|m| m.len()).unwrap_or(0);
            let mut progress = Progress::new("encrypting", size / 100);
            let summary = dataset::write_encrypted(batches, schema(), &loc, &public, |n| {
                progress.set(n.min(size / 100))
            })
            .await?;
            progress.finish();
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Rewrap {
            url,
            key_file: Some(key_file),
            to: Some(to),
            token,
            ca,
            ..
        } => {
            let loc = locate(&url)?;
            let to = public_key(&to, token.as_deref(), ca.as_deref()).await?;
            let pkcs8 = conclave_net::read_pkcs8(&key_file)?;
            let key = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(&pkcs8)
                .map_err(|_| anyhow::anyhow!("{} is not an RSA PKCS#8 key", key_file.display()))?;
            let summary = conclave_data::rewrap::rewrap_footer_key(&loc, |w| async move {
                let old = PrivateKeyUnwrapper::new(&w.master_key_id, key)?;
                let plain = old.unwrap_aes_key(&w.wrapped)?;
                let id = if versioned_key_id(&w.master_key_id).is_some() {
                    to.kid.clone()
                } else {
                    w.master_key_id
                };
                Ok((id, to.wrap(&plain)?))
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Rewrap {
            url,
            from,
            token,
            ca,
            ..
        } => {
            let loc = locate(&url)?;
            let token = read_token(token.as_deref())?;
            let http = conclave_net::client(ca.as_deref())?;
            let summary = conclave_data::rewrap::rewrap_footer_key(&loc, |w| async move {
                let source = from.unwrap_or_else(|| w.master_key_id.clone());
                let (vault, name, version) = versioned_key_id(&source).ok_or_else(|| {
                    DataError::Key(format!(
                        "the dataset names its key {source:?}, without a vault and version: give --from https://<vault>/keys/<name>/<version>"
                    ))
                })?;
                let client = conclave_kms::client::VaultClient::new(http, vault, &token);
                let (kid, rewrapped) = client
                    .rewrap(name, version, &w.wrapped)
                    .await
                    .map_err(|e| DataError::Key(format!("the vault did not re-wrap: {}", e.reason())))?;
                // A file that named a key version names the new one; one that named its key by
                // name keeps doing so (PyArrow's KMS clients look keys up by it).
                let id = if versioned_key_id(&w.master_key_id).is_some() {
                    kid
                } else {
                    w.master_key_id
                };
                Ok((id, rewrapped))
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Inspect {
            url,
            key_file,
            sample,
        } => {
            let loc = locate(&url)?;
            let mut inspection = dataset::inspect(&loc).await?;
            let mut sample_rows = None;
            if let Some(path) = key_file {
                let material = inspection.key_material.as_ref().with_context(|| {
                    format!(
                        "the dataset is not encrypted ({}): there is nothing to decrypt",
                        inspection.mode
                    )
                })?;
                let pkcs8 = conclave_net::read_pkcs8(&path)?;
                let key = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(&pkcs8)
                    .map_err(|_| anyhow::anyhow!("{} is not an RSA PKCS#8 key", path.display()))?;
                let unwrapper: Arc<dyn dataset::KeyUnwrapper> =
                    Arc::new(PrivateKeyUnwrapper::new(&material.master_key_id, key)?);
                inspection = dataset::inspect_with_key(&loc, unwrapper.clone()).await?;
                let read = async {
                    let mut stream =
                        dataset::read_encrypted(&loc, unwrapper, None, sample.max(1)).await?;
                    Ok::<_, anyhow::Error>(match stream.next().await {
                        Some(batch) => rows_as_text(&batch?, sample)?,
                        None => Vec::new(),
                    })
                };
                sample_rows = Some(read.await);
            }
            let mut out = serde_json::to_value(&inspection)?;
            out["note"] = note(&inspection).into();
            match sample_rows {
                Some(Ok(rows)) => out["sample"] = rows.into(),
                // The inspection is still worth printing: it shows which column is the problem.
                Some(Err(e)) => {
                    out["refused"] = e.to_string().into();
                    println!("{}", serde_json::to_string_pretty(&out)?);
                    eprintln!("error: {e}");
                    return Ok(ExitCode::FAILURE);
                }
                None => {}
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
