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
        let token = token
            .context("fetching a key from the vault needs --token (or CONCLAVE_VAULT_TOKEN)")?;
        let token = match token.strip_prefix('@') {
            Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?,
            None => token.to_string(),
        };
        conclave_kms::client::VaultClient::new(conclave_net::client(ca)?, vault, &token)
            .get_key(name)
            .await?
    } else {
        let text = std::fs::read(key).with_context(|| format!("reading the key file {key}"))?;
        serde_json::from_slice(&text).with_context(|| format!("{key} is not a JWK"))?
    };
    Ok(VaultPublicKey::from_jwk(&jwk)?)
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
