//! Running the partner analysis over encrypted datasets: every dataset is stream-decrypted in
//! its own task (only the columns the analysis needs are decoded), progress is reported as it
//! goes, and a dataset that fails part-way fails the whole analysis: nothing partial is
//! released.

use std::collections::BTreeMap;
use std::sync::Arc;

use conclave_data::dataset::{self, KeyUnwrapper};
use conclave_data::store::Location;
use futures::StreamExt as _;

use crate::analytics::{AnalysisResult, COLUMNS, CompanyAggregate, finish};

/// One input: a company's encrypted dataset and the released key that opens it.
pub struct Input {
    pub company: String,
    pub location: Location,
    /// The released key; `None` reads a plaintext dataset (for comparisons in benchmarks).
    pub unwrapper: Option<Arc<dyn KeyUnwrapper>>,
}

/// Progress of one dataset.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Progress {
    pub company: String,
    pub phase: Phase,
    pub records: u64,
    /// Records in the dataset (from its footer); 0 until known.
    pub records_total: u64,
    pub bytes_total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Opening,
    Decrypting,
    Done,
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("{company}: {detail}")]
    Dataset { company: String, detail: String },
    #[error("the analysis was cancelled")]
    Cancelled,
}

pub const BATCH_ROWS: usize = 64 * 1024;

async fn one(
    input: Input,
    year: i32,
    report: Arc<dyn Fn(Progress) + Send + Sync>,
    cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<(String, CompanyAggregate), AnalysisError> {
    let company = input.company.clone();
    let fail = |detail: String| AnalysisError::Dataset {
        company: company.clone(),
        detail,
    };
    let bytes_total = dataset::inspect(&input.location)
        .await
        .map(|i| i.bytes)
        .unwrap_or(0);
    let mut progress = Progress {
        company: company.clone(),
        phase: Phase::Opening,
        records: 0,
        records_total: 0,
        bytes_total,
    };
    report(progress.clone());
    let result = async {
        progress.records_total = dataset::row_count(&input.location, input.unwrapper.clone())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let opened = match input.unwrapper {
            Some(u) => {
                dataset::read_encrypted(&input.location, u, Some(&COLUMNS), BATCH_ROWS).await
            }
            None => dataset::read_plain(&input.location, Some(&COLUMNS), BATCH_ROWS).await,
        };
        let mut stream = opened.map_err(|e| fail(e.to_string()))?;
        progress.phase = Phase::Decrypting;
        let mut agg = CompanyAggregate::default();
        while let Some(batch) = stream.next().await {
            if *cancel.borrow() {
                return Err(AnalysisError::Cancelled);
            }
            let batch =
                batch.map_err(|e| fail(format!("{e} (the dataset may be tampered with)")))?;
            agg.add_batch(&batch, year)
                .map_err(|e| fail(e.to_string()))?;
            progress.records += batch.num_rows() as u64;
            report(progress.clone());
        }
        Ok(agg)
    }
    .await;
    progress.phase = if result.is_ok() {
        Phase::Done
    } else {
        Phase::Failed
    };
    report(progress);
    result.map(|agg| (company, agg))
}

/// Analyses all inputs in parallel and releases the k-suppressed result.
pub async fn analyze(
    inputs: Vec<Input>,
    k: u64,
    reference_year: i32,
    report: Arc<dyn Fn(Progress) + Send + Sync>,
    cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<AnalysisResult, AnalysisError> {
    let tasks: Vec<_> = inputs
        .into_iter()
        .map(|input| tokio::spawn(one(input, reference_year, report.clone(), cancel.clone())))
        .collect();
    let mut companies: BTreeMap<String, CompanyAggregate> = BTreeMap::new();
    for t in tasks {
        let (company, agg) = t.await.map_err(|e| AnalysisError::Dataset {
            company: "?".into(),
            detail: e.to_string(),
        })??;
        companies.entry(company).or_default().merge(agg);
    }
    Ok(finish(&companies, k, reference_year))
}
