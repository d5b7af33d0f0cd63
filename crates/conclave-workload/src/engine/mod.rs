//! Running an analysis contract inside the TEE with Apache DataFusion.
//!
//! Each input is registered as a table whose scan stream-decrypts the dataset with the key its
//! vault released, decoding only the columns the query needs (DataFusion pushes the projection
//! into the scan), strings as Arrow views. Scans of release aggregates without joins share one
//! reader per input, so that a run decodes each dataset once, whatever the number of queries
//! (see [`run`]). Every query is planned, its plan checked against the contract's output rules
//! ([`rules`]), and then run in two steps so that `k` is enforced by the workload and not by
//! the query: first each **release aggregate** runs, with a hidden `COUNT(*)` of its own, and
//! groups of fewer than `k` records are withheld (and counted); then the rest of the query
//! (ranking, ordering, limits, joins of aggregates) runs over the released groups only.
//!
//! What leaves is a table of JSON rows per query. Errors raised while data flows are not passed
//! on verbatim (an engine's messages can quote the values they failed on); planning errors,
//! which come from the SQL and the schemas only, are.

pub mod privacy;
pub mod rules;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use conclave_contract::Contract;
use conclave_data::dataset::{self, KeyUnwrapper, Strings};
use conclave_data::store::Location;
use datafusion::arrow::array::{Array, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode as _, TreeNodeRecursion};
use datafusion::common::{Column, DataFusionError};
use datafusion::datasource::{MemTable, TableType, provider_as_source};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, collect};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt as _;

pub use rules::RuleViolation;

/// Rows per decoded batch.
pub const BATCH_ROWS: usize = 64 * 1024;

/// One of the contract's inputs, opened: where its dataset is and the key that opens it.
pub struct ContractInput {
    /// The contract's table name for it.
    pub table: String,
    pub location: Location,
    /// The released key; `None` reads a plaintext dataset (benchmarks' comparisons only).
    pub unwrapper: Option<Arc<dyn KeyUnwrapper>>,
}

/// How far a run is. A run first reads its inputs, running every query's release aggregates
/// at once ([`RunStage::Reading`]), then releases the queries' results one by one.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContractProgress {
    pub stage: RunStage,
    /// The query being released (its name in the contract), while releasing.
    pub query: Option<String>,
    /// Queries whose results are released so far, of `queries`.
    pub queries_released: usize,
    pub queries: usize,
    /// Whether the contract adds noise: then the record counts are not shown (both 0).
    pub differential_privacy: bool,
    /// Records decrypted and decoded so far, over all inputs; 0 with differential privacy.
    pub records: u64,
    /// The records reading decodes in all: each input's once for the aggregates that share
    /// readers, and again for each scan of an aggregate over a join; 0 with differential
    /// privacy.
    pub records_total: u64,
}

/// What a run is doing ([`ContractProgress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStage {
    /// Decrypting the inputs and running the release aggregates over them.
    Reading,
    /// Withholding small groups (or adding noise), then running the rest of each query.
    Releasing,
}

/// A result column: its name and Arrow type.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResultColumn {
    pub name: String,
    pub data_type: String,
}

/// What one query releases.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueryResult {
    pub name: String,
    pub columns: Vec<ResultColumn>,
    /// One JSON object per row, keyed by column name.
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Groups withheld by the workload for having fewer than `k` records (over all of the
    /// query's release aggregates); with differential privacy, on their noisy counts.
    pub suppressed_groups: u64,
    /// The noise added: `none`, or the mechanism and what this query spent
    /// ([`privacy::describe`]).
    #[serde(default = "no_noise")]
    pub noise: String,
}

fn no_noise() -> String {
    "none".into()
}

/// What a contract run releases.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContractResult {
    pub contract: String,
    /// The contract's digest (hex SHA-256 of its canonical JSON).
    pub digest: String,
    pub k: u64,
    pub queries: Vec<QueryResult>,
}

/// Why a run released nothing.
#[derive(Debug, thiserror::Error)]
pub enum ContractRunError {
    #[error("input {table}: {detail}")]
    Input { table: String, detail: String },
    #[error("query {query}: {violation}")]
    Rule {
        query: String,
        violation: RuleViolation,
    },
    #[error("query {query}: {detail}")]
    Query { query: String, detail: String },
    #[error("the run was cancelled")]
    Cancelled,
}

/// A failure of an input's stream, carried through DataFusion.
#[derive(Debug, thiserror::Error)]
enum ScanFailure {
    #[error("{table}: {detail}")]
    Input { table: String, detail: String },
    #[error("cancelled")]
    Cancelled,
}

/// Whether this workload can run `contract` as written: it refuses what it would not honour,
/// rather than attest privacy settings it does not apply.
///
/// # Errors
/// What the contract asks that this workload does not do, as a [`ContractRunError::Query`]
/// naming the setting.
pub fn supported(contract: &Contract) -> Result<(), ContractRunError> {
    let unsupported = |detail: &str| ContractRunError::Query {
        query: "(contract)".into(),
        detail: detail.into(),
    };
    if !contract.output.aggregate_only {
        return Err(unsupported(
            "aggregate_only = false: this workload releases aggregates only",
        ));
    }
    Ok(())
}

/// Runs every query of `contract` over `inputs` and returns what its rules let out.
///
/// # Errors
/// [`ContractRunError`]: a contract this workload does not support ([`supported`]); an input
/// missing, unreadable or not of the contract's schema; a query the rules refuse (nothing of
/// that contract runs then); a query that fails; cancellation.
pub async fn run(
    contract: &Contract,
    inputs: Vec<ContractInput>,
    report: Arc<dyn Fn(ContractProgress) + Send + Sync>,
    cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<ContractResult, ContractRunError> {
    supported(contract)?;
    let k = contract.output.k.max(1);
    let forbidden: BTreeSet<String> = contract.output.forbidden_columns.iter().cloned().collect();
    let config = SessionConfig::new()
        .with_batch_size(8192)
        .with_information_schema(false);
    let ctx = SessionContext::new_with_config(config);
    let progress = Arc::new(AtomicU64::new(0));
    let sharing = Arc::new(AtomicBool::new(false));
    let mut sources = Vec::with_capacity(contract.inputs.len());
    for spec in &contract.inputs {
        let input = inputs
            .iter()
            .find(|i| i.table == spec.table)
            .ok_or_else(|| ContractRunError::Input {
                table: spec.table.clone(),
                detail: "no dataset was given for it".into(),
            })?;
        let (schema, rows) = table_schema(spec, input).await?;
        let source = Arc::new(Source {
            table: spec.table.clone(),
            location: input.location.clone(),
            unwrapper: input.unwrapper.clone(),
            rows,
            records: Arc::clone(&progress),
            cancel: cancel.clone(),
            sharing: Arc::clone(&sharing),
            scans: Mutex::default(),
        });
        sources.push(Arc::clone(&source));
        let table = DatasetTable { schema, source };
        ctx.register_table(spec.table.as_str(), Arc::new(table))
            .map_err(|e| ContractRunError::Input {
                table: spec.table.clone(),
                detail: e.to_string(),
            })?;
    }

    // Every query is planned and checked before any runs: a contract breaking its rules in
    // its last query releases nothing from the first.
    let plans = plan_queries(&ctx, contract, &forbidden).await?;
    let noise = noise_plan(contract, &plans)?;
    let private = noise.is_some();

    // Every release aggregate of every query, with its hidden counts (and, with differential
    // privacy, its clamps), planned for execution. Those that read their inputs as streams
    // (no joins) share one reader per input: each dataset is decrypted and decoded once per run,
    // not once per aggregate.
    let mut gates = Vec::new();
    for (query, (_, aggregates)) in plans.iter().enumerate() {
        for (index, aggregate) in aggregates.iter().enumerate() {
            let fail = |e| execution_error(&contract.queries[query].name, e);
            let gate_noise = noise.as_ref().map(|n| &n[query][index]);
            let clamped = match gate_noise {
                Some(n) => privacy::clamped(aggregate, n).map_err(fail)?,
                None => aggregate.clone(),
            };
            let (counted, hidden) = rules::with_group_records(&clamped).map_err(fail)?;
            let shared = streams_inputs(&aggregate.input);
            sharing.store(shared, Ordering::Relaxed);
            let physical = ctx
                .state()
                .create_physical_plan(&counted)
                .await
                .map_err(fail)?;
            gates.push(GateRun {
                query,
                index,
                hidden,
                physical: Some(physical),
                shared,
            });
        }
    }
    sharing.store(false, Ordering::Relaxed);
    let passes: u64 = sources.iter().map(|s| s.planned_passes()).sum();

    let reading = Arc::new(AtomicBool::new(true));
    let released = Arc::new(AtomicUsize::new(0));
    let queries = contract.queries.len();
    let names: Vec<String> = contract.queries.iter().map(|q| q.name.clone()).collect();
    // One report at a time, each from one reading of the state: reports never go back from
    // releasing to reading, whichever of the ticker and the run sends them.
    let reporting = Arc::new(Mutex::new(()));
    let tick = {
        let (report, progress, reading, released, names) = (
            report.clone(),
            progress.clone(),
            reading.clone(),
            released.clone(),
            names.clone(),
        );
        move || {
            let _one = reporting.lock().expect("progress lock");
            let is_reading = reading.load(Ordering::Relaxed);
            let done = released.load(Ordering::Relaxed).min(queries);
            report(ContractProgress {
                stage: if is_reading {
                    RunStage::Reading
                } else {
                    RunStage::Releasing
                },
                query: names.get(done).cloned().filter(|_| !is_reading),
                queries_released: done,
                queries,
                differential_privacy: private,
                // With differential privacy the exact number of records is not shown.
                records: if private {
                    0
                } else {
                    progress.load(Ordering::Relaxed)
                },
                records_total: if private { 0 } else { passes },
            })
        }
    };
    tick();
    let _ticker = AbortOnDrop(tokio::spawn({
        let tick = tick.clone();
        async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                tick();
            }
        }
    }));

    // The shared readers start once every scan is planned, and the aggregates they feed run
    // together (the slowest sets the pace: each reader waits for every one of its scans to take
    // a batch before it decodes the next). Aggregates over joins read on their own, one after
    // another, so that a join's build side never waits on a reader held up by its probe side.
    let _readers: Vec<AbortOnDrop> = sources.iter().filter_map(|s| s.start_shared()).collect();
    let mut outputs: Vec<Option<Vec<RecordBatch>>> = vec![None; gates.len()];
    let mut together = tokio::task::JoinSet::new();
    let mut alone = Vec::new();
    for (i, gate) in gates.iter_mut().enumerate() {
        if gate.shared {
            let (physical, task_ctx) = (gate.physical.take().expect("runs once"), ctx.task_ctx());
            together.spawn(async move { (i, collect(physical, task_ctx).await) });
        } else {
            alone.push(i);
        }
    }
    while let Some(joined) = together.join_next().await {
        // A task's own failure (a panic) is not said: its message could quote values.
        let (i, batches) = joined.map_err(|_| ContractRunError::Query {
            query: "(contract)".into(),
            detail: "an aggregate's task failed; its message is withheld because it may quote record values".into(),
        })?;
        outputs[i] = Some(batches.map_err(|e| execution_error(&names[gates[i].query], e))?);
    }
    for i in alone {
        let physical = gates[i].physical.take().expect("runs once");
        let batches = collect(physical, ctx.task_ctx())
            .await
            .map_err(|e| execution_error(&names[gates[i].query], e))?;
        outputs[i] = Some(batches);
    }
    reading.store(false, Ordering::Relaxed);
    tick();

    let mut results = Vec::with_capacity(queries);
    let mut outputs = gates.into_iter().zip(outputs).peekable();
    for (query, (plan, aggregates)) in plans.into_iter().enumerate() {
        let mut gate_outputs = Vec::with_capacity(aggregates.len());
        while let Some((gate, _)) = outputs.peek()
            && gate.query == query
        {
            let (gate, batches) = outputs.next().expect("peeked");
            debug_assert_eq!(gate.index, gate_outputs.len());
            gate_outputs.push((gate.hidden, batches.expect("every aggregate ran")));
        }
        let result = release_query(
            &ctx,
            &names[query],
            plan,
            aggregates,
            gate_outputs,
            k,
            noise.as_ref().map(|n| n[query].as_slice()),
        )
        .await?;
        results.push(result);
        released.store(query + 1, Ordering::Relaxed);
        tick();
    }
    Ok(ContractResult {
        contract: contract.name.clone(),
        digest: contract.digest(),
        k,
        queries: results,
    })
}

/// A release aggregate planned for execution ([`run`]).
struct GateRun {
    /// Its query's position in the contract, and its own among the query's aggregates.
    query: usize,
    index: usize,
    /// Hidden count columns at the end of its output ([`rules::with_group_records`]).
    hidden: usize,
    /// Taken when it runs, so that its scans' receivers go with it once it is done.
    physical: Option<Arc<dyn ExecutionPlan>>,
    /// Whether its scans are fed by the inputs' shared readers.
    shared: bool,
}

/// Aborts a task when dropped: a run that ends (or fails) stops its readers and ticker.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether `plan` consumes each of its scans as a stream, so that its scans can share readers
/// with other plans' without waiting on one another: projections, filters, unions, sorts,
/// limits, windows and nested aggregates do; a join (whose probe side waits for its build side)
/// or anything less common does not, nor does any plan with a subquery expression left in it.
fn streams_inputs(plan: &LogicalPlan) -> bool {
    !plan
        .exists(|node| {
            let streaming = matches!(
                node,
                LogicalPlan::Projection(_)
                    | LogicalPlan::Filter(_)
                    | LogicalPlan::Aggregate(_)
                    | LogicalPlan::Sort(_)
                    | LogicalPlan::Limit(_)
                    | LogicalPlan::Union(_)
                    | LogicalPlan::SubqueryAlias(_)
                    | LogicalPlan::TableScan(_)
                    | LogicalPlan::Window(_)
                    | LogicalPlan::Distinct(_)
                    | LogicalPlan::Values(_)
                    | LogicalPlan::EmptyRelation(_)
            );
            let subquery = node.expressions().iter().any(|e| {
                e.exists(|e| {
                    Ok(matches!(
                        e,
                        Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
                    ))
                })
                .unwrap_or(true)
            });
            Ok(!streaming || subquery)
        })
        .unwrap_or(true)
}

/// Plans every query of `contract` in `ctx` (its inputs registered) and checks each plan
/// against the rules: the optimised plans with their release aggregates.
async fn plan_queries(
    ctx: &SessionContext,
    contract: &Contract,
    forbidden: &BTreeSet<String>,
) -> Result<Vec<(LogicalPlan, Vec<Aggregate>)>, ContractRunError> {
    let tables: BTreeSet<String> = contract.inputs.iter().map(|i| i.table.clone()).collect();
    let mut plans = Vec::new();
    for q in &contract.queries {
        let fail = |detail: String| ContractRunError::Query {
            query: q.name.clone(),
            detail,
        };
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = ctx
            .sql_with_options(&q.sql, options)
            .await
            .map_err(|e| fail(planning_error(e)))?;
        let optimized = ctx
            .state()
            .optimize(frame.logical_plan())
            .map_err(|e| fail(planning_error(e)))?;
        let gates =
            rules::release_aggregates(&optimized, forbidden, &tables).map_err(|violation| {
                ContractRunError::Rule {
                    query: q.name.clone(),
                    violation,
                }
            })?;
        plans.push((optimized, gates));
    }
    Ok(plans)
}

/// Checks `contract` before any key is asked for: what [`supported`] checks, and every query
/// planned over empty tables of the contract's declared schemas and checked against the rules.
///
/// # Errors
/// As [`run`] would refuse the contract for, without reading any data.
pub async fn check(contract: &Contract) -> Result<(), ContractRunError> {
    supported(contract)?;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(false));
    for input in &contract.inputs {
        let fields: Vec<datafusion::arrow::datatypes::Field> = input
            .schema
            .iter()
            .map(|c| {
                datafusion::arrow::datatypes::Field::new(
                    &c.name,
                    declared_type(&c.data_type),
                    c.nullable,
                )
            })
            .collect();
        let table =
            MemTable::try_new(Arc::new(Schema::new(fields)), vec![vec![]]).map_err(|e| {
                ContractRunError::Input {
                    table: input.table.clone(),
                    detail: e.to_string(),
                }
            })?;
        ctx.register_table(input.table.as_str(), Arc::new(table))
            .map_err(|e| ContractRunError::Input {
                table: input.table.clone(),
                detail: e.to_string(),
            })?;
    }
    let forbidden: BTreeSet<String> = contract.output.forbidden_columns.iter().cloned().collect();
    let plans = plan_queries(&ctx, contract, &forbidden).await?;
    noise_plan(contract, &plans).map(|_| ())
}

/// With differential privacy, the calibrated noise of every release aggregate, query by query
/// ([`privacy::plan`]); `None` without.
fn noise_plan(
    contract: &Contract,
    plans: &[(LogicalPlan, Vec<Aggregate>)],
) -> Result<Option<Vec<Vec<privacy::GateNoise>>>, ContractRunError> {
    let Some(dp) = &contract.output.differential_privacy else {
        return Ok(None);
    };
    let gates: Vec<Vec<Aggregate>> = plans.iter().map(|(_, g)| g.clone()).collect();
    privacy::plan(&gates, dp, contract.output.k.max(1))
        .map(Some)
        .map_err(|(q, violation)| ContractRunError::Rule {
            query: contract.queries[q].name.clone(),
            violation,
        })
}

/// The Arrow type a contract's column type names (the canonical one of [`type_matches`]).
fn declared_type(t: &str) -> DataType {
    match t {
        "bool" => DataType::Boolean,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float32" => DataType::Float32,
        "float64" => DataType::Float64,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        decimal => decimal
            .strip_prefix("decimal(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.split_once(','))
            .and_then(|(p, s)| Some((p.trim().parse::<u8>().ok()?, s.trim().parse::<i8>().ok()?)))
            .map(|(p, s)| DataType::Decimal128(p, s))
            .unwrap_or(DataType::Utf8View),
    }
}

/// Releases query `name`'s results: each of its release aggregates' groups (`outputs`: their
/// hidden count columns and batches, in order) checked against `k` (or noised and selected,
/// with differential privacy), and the rest of the query run over the released groups only.
async fn release_query(
    ctx: &SessionContext,
    name: &str,
    plan: LogicalPlan,
    gates: Vec<Aggregate>,
    outputs: Vec<(usize, Vec<RecordBatch>)>,
    k: u64,
    noise: Option<&[privacy::GateNoise]>,
) -> Result<QueryResult, ContractRunError> {
    let fail = |e: DataFusionError| execution_error(name, e);
    let mut suppressed = 0u64;
    let mut replacements = Vec::with_capacity(gates.len());
    for (i, (gate, (hidden, batches))) in gates.iter().zip(outputs).enumerate() {
        let (kept, withheld) = match noise.map(|n| &n[i]) {
            None => withhold_small_groups(batches, hidden, k).map_err(fail)?,
            Some(noise) => {
                let target = Arc::new(gate.schema.as_arrow().clone());
                privacy::release(noise, batches, hidden, k, &target).map_err(fail)?
            }
        };
        suppressed += withheld;
        replacements.push(released_groups(i, gate, kept).map_err(fail)?);
    }
    let released = plan
        .transform_down(|node| {
            if let LogicalPlan::Aggregate(a) = &node
                && let Some(i) = gates.iter().position(|g| g == a)
            {
                return Ok(Transformed::new(
                    replacements[i].clone(),
                    true,
                    TreeNodeRecursion::Jump,
                ));
            }
            Ok(Transformed::no(node))
        })
        .map_err(fail)?
        .data;
    let batches = execute(ctx, &released).await.map_err(fail)?;
    let schema = released.schema().as_arrow().clone();
    Ok(QueryResult {
        name: name.to_string(),
        columns: schema
            .fields()
            .iter()
            .map(|f| ResultColumn {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
            })
            .collect(),
        rows: json_rows(&batches).map_err(fail)?,
        suppressed_groups: suppressed,
        noise: noise.map_or_else(no_noise, privacy::describe),
    })
}

async fn execute(
    ctx: &SessionContext,
    plan: &LogicalPlan,
) -> datafusion::common::Result<Vec<RecordBatch>> {
    let physical = ctx.state().create_physical_plan(plan).await?;
    collect(physical, ctx.task_ctx()).await
}

/// Keeps the groups whose hidden counts (the last `hidden` columns: rows, and the rows each
/// aggregate covers) are all at least `k`, without those columns, and counts the others.
fn withhold_small_groups(
    batches: Vec<RecordBatch>,
    hidden: usize,
    k: u64,
) -> datafusion::common::Result<(Vec<RecordBatch>, u64)> {
    let mut kept = Vec::with_capacity(batches.len());
    let mut withheld = 0u64;
    for b in batches {
        let first = b.num_columns() - hidden;
        let mut mask = vec![true; b.num_rows()];
        for i in first..b.num_columns() {
            let counts = b
                .column(i)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .ok_or_else(|| DataFusionError::Internal("a group count is not an Int64".into()))?;
            for (keep, c) in mask.iter_mut().zip(counts.iter()) {
                *keep &= c.is_some_and(|c| c >= 0 && c as u64 >= k);
            }
        }
        let mask = BooleanArray::from(mask);
        withheld += (mask.len() - mask.true_count()) as u64;
        let filtered = filter_record_batch(&b, &mask)?;
        kept.push(filtered.project(&(0..first).collect::<Vec<_>>())?);
    }
    Ok((kept, withheld))
}

/// The released groups of gate `i`, as a plan with the aggregate's own output schema (names and
/// qualifiers), so that the rest of the query reads them in its place.
fn released_groups(
    i: usize,
    gate: &Aggregate,
    kept: Vec<RecordBatch>,
) -> datafusion::common::Result<LogicalPlan> {
    // The aggregate's own fields (types, nullability: the plan above it was built on them),
    // named by position here (two group keys may share a name under different qualifiers) and
    // given back their names and qualifiers by the projection below.
    let schema: SchemaRef = Arc::new(Schema::new(
        gate.schema
            .fields()
            .iter()
            .enumerate()
            .map(|(j, f)| f.as_ref().clone().with_name(format!("c{j}")))
            .collect::<Vec<_>>(),
    ));
    let kept = kept
        .into_iter()
        .map(|b| {
            RecordBatch::try_new_with_options(
                Arc::clone(&schema),
                b.columns().to_vec(),
                &RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let name = format!("__conclave_released_{i}");
    let table = MemTable::try_new(schema, vec![kept])?;
    LogicalPlanBuilder::scan(name.as_str(), provider_as_source(Arc::new(table)), None)?
        .project(gate.schema.iter().enumerate().map(|(j, (qualifier, f))| {
            Expr::Column(Column::new(Some(name.as_str()), format!("c{j}")))
                .alias_qualified(qualifier.cloned(), f.name())
        }))?
        .build()
}

fn json_rows(
    batches: &[RecordBatch],
) -> datafusion::common::Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs)?;
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| DataFusionError::External(Box::new(e)))
}

/// A planning error: from the SQL and the schemas only, so said as it is.
fn planning_error(e: DataFusionError) -> String {
    e.strip_backtrace()
}

/// An error raised while data flowed: an input's own failure is said (its messages are
/// Conclave's); the engine's are not, since they can quote values.
fn execution_error(query: &str, e: DataFusionError) -> ContractRunError {
    if let DataFusionError::External(inner) = e.find_root()
        && let Some(failure) = inner.downcast_ref::<ScanFailure>()
    {
        return match failure {
            ScanFailure::Cancelled => ContractRunError::Cancelled,
            ScanFailure::Input { table, detail } => ContractRunError::Input {
                table: table.clone(),
                detail: detail.clone(),
            },
        };
    }
    let kind = match e.find_root() {
        DataFusionError::ArrowError(..) => "a computation on the data",
        DataFusionError::ResourcesExhausted(_) => "memory",
        _ => "the query engine",
    };
    ContractRunError::Query {
        query: query.to_string(),
        detail: format!(
            "failed while running, in {kind}; the engine's message is withheld because it may quote record values"
        ),
    }
}

/// The table an input is read as: the dataset's own Arrow types for the contract's columns, in
/// the contract's order, once each is checked against the type the contract names; and its
/// number of records.
async fn table_schema(
    spec: &conclave_contract::Input,
    input: &ContractInput,
) -> Result<(SchemaRef, u64), ContractRunError> {
    let fail = |detail: String| ContractRunError::Input {
        table: spec.table.clone(),
        detail,
    };
    let footer = dataset::footer(&input.location, input.unwrapper.clone())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut fields = Vec::with_capacity(spec.schema.len());
    for column in &spec.schema {
        let field = footer
            .schema
            .field_with_name(&column.name)
            .map_err(|_| fail(format!("the dataset has no column {}", column.name)))?;
        if !type_matches(&column.data_type, field.data_type()) {
            return Err(fail(format!(
                "column {} is {} in the dataset, but the contract says {}",
                column.name,
                field.data_type(),
                column.data_type
            )));
        }
        fields.push(field.as_ref().clone());
    }
    // Strings are read as views (see `Strings::Views`).
    let schema = dataset::string_views(&Schema::new(fields));
    Ok((Arc::new(schema), footer.rows))
}

/// Whether an Arrow type is one the contract's column type names (see
/// [`conclave_contract::valid_column_type`]).
pub fn type_matches(contract_type: &str, t: &DataType) -> bool {
    let text =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    match (contract_type, t) {
        ("string", DataType::Dictionary(_, v)) => text(v),
        ("string", t) => text(t),
        ("bool", DataType::Boolean)
        | ("int8", DataType::Int8)
        | ("int16", DataType::Int16)
        | ("int32", DataType::Int32)
        | ("int64", DataType::Int64)
        | ("uint8", DataType::UInt8)
        | ("uint16", DataType::UInt16)
        | ("uint32", DataType::UInt32)
        | ("uint64", DataType::UInt64)
        | ("float32", DataType::Float32)
        | ("float64", DataType::Float64)
        | ("date", DataType::Date32 | DataType::Date64) => true,
        (
            "timestamp",
            DataType::Timestamp(
                TimeUnit::Second
                | TimeUnit::Millisecond
                | TimeUnit::Microsecond
                | TimeUnit::Nanosecond,
                _,
            ),
        ) => true,
        (decimal, DataType::Decimal128(p, s) | DataType::Decimal256(p, s)) => {
            decimal == format!("decimal({p},{s})")
                || decimal.replace(' ', "") == format!("decimal({p},{s})")
        }
        _ => false,
    }
}

/// A dataset as a DataFusion table.
#[derive(Debug)]
struct DatasetTable {
    schema: SchemaRef,
    source: Arc<Source>,
}

/// Batches handed from a shared reader to one scan: bounded, so that the reader waits for its
/// slowest scan and memory stays a few batches per scan.
const SHARED_BATCHES: usize = 2;

type BatchSender = tokio::sync::mpsc::Sender<datafusion::common::Result<RecordBatch>>;
type BatchReceiver = tokio::sync::mpsc::Receiver<datafusion::common::Result<RecordBatch>>;

struct Source {
    table: String,
    location: Location,
    unwrapper: Option<Arc<dyn KeyUnwrapper>>,
    /// Records in the dataset (its footer's count).
    rows: u64,
    /// Records decoded, over all inputs of the run.
    records: Arc<AtomicU64>,
    cancel: tokio::sync::watch::Receiver<bool>,
    /// Whether scans planned now are to be fed by the shared reader (set by [`run`] while it
    /// plans each aggregate).
    sharing: Arc<AtomicBool>,
    scans: Mutex<PlannedScans>,
}

/// The scans of one input planned so far ([`Source`]).
#[derive(Default)]
struct PlannedScans {
    /// Those waiting for the shared reader: the columns each reads, and where its batches go.
    shared: Vec<(SchemaRef, BatchSender)>,
    /// Those that read on their own.
    alone: u64,
}

impl Source {
    /// How many times the run will decode this input: once if any scan shares the reader, and
    /// once for each scan that reads alone.
    fn planned_passes(&self) -> u64 {
        let scans = self.scans.lock().expect("scans lock");
        self.rows * (u64::from(!scans.shared.is_empty()) + scans.alone)
    }

    /// Starts the shared reader for the scans planned to share it (none: no reader). It decodes
    /// the union of their columns once and hands each scan its own columns of every batch;
    /// a scan that has finished (or was never run) is skipped, and the reader stops when none
    /// is left. Its failure (or a cancellation) ends every scan with it.
    fn start_shared(self: &Arc<Self>) -> Option<AbortOnDrop> {
        let scans = std::mem::take(&mut self.scans.lock().expect("scans lock").shared);
        if scans.is_empty() {
            return None;
        }
        let wanted: BTreeSet<&str> = scans
            .iter()
            .flat_map(|(schema, _)| schema.fields().iter().map(|f| f.name().as_str()))
            .collect();
        let columns: Vec<String> = wanted.into_iter().map(str::to_string).collect();
        let source = Arc::clone(self);
        Some(AbortOnDrop(tokio::spawn(async move {
            let mut scans = scans;
            let names: Vec<&str> = columns.iter().map(String::as_str).collect();
            let mut stream = source.open(&names);
            while let Some(batch) = stream.next().await {
                let batch = batch.and_then(|b| {
                    if *source.cancel.borrow() {
                        return Err(DataFusionError::External(Box::new(ScanFailure::Cancelled)));
                    }
                    source
                        .records
                        .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    Ok(b)
                });
                let failed = batch.is_err();
                let mut open = Vec::with_capacity(scans.len());
                for (schema, tx) in scans {
                    let own = match &batch {
                        Ok(b) => conform(b, &schema),
                        Err(e) => Err(source.same_failure(e)),
                    };
                    if tx.send(own).await.is_ok() {
                        open.push((schema, tx));
                    }
                }
                scans = open;
                if failed || scans.is_empty() {
                    return;
                }
            }
        })))
    }

    /// The dataset's batches of `columns` (in the file's order), decrypted as they stream; an
    /// input's failure is a [`ScanFailure`].
    fn open(
        self: &Arc<Self>,
        columns: &[&str],
    ) -> futures::stream::BoxStream<'static, datafusion::common::Result<RecordBatch>> {
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        let source = Arc::clone(self);
        let opened = async move {
            let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
            let opened = dataset::read_with(
                &source.location,
                source.unwrapper.clone(),
                Some(&columns),
                BATCH_ROWS,
                Strings::Views,
            )
            .await;
            match opened {
                Ok(stream) => stream
                    .map(move |b| {
                        b.map_err(|e| {
                            source.failure(format!("{e} (the dataset may be tampered with)"))
                        })
                    })
                    .boxed(),
                Err(e) => futures::stream::iter([Err(source.failure(e.to_string()))]).boxed(),
            }
        };
        futures::stream::once(opened).flatten().boxed()
    }

    fn failure(&self, detail: String) -> DataFusionError {
        DataFusionError::External(Box::new(ScanFailure::Input {
            table: self.table.clone(),
            detail,
        }))
    }

    /// The error a shared reader's `e` is, for each of its scans (errors do not clone): the
    /// input's own failure or cancellation as it is, anything else as the engine's.
    fn same_failure(&self, e: &DataFusionError) -> DataFusionError {
        match e {
            DataFusionError::External(inner) => match inner.downcast_ref::<ScanFailure>() {
                Some(ScanFailure::Cancelled) => {
                    DataFusionError::External(Box::new(ScanFailure::Cancelled))
                }
                Some(ScanFailure::Input { detail, .. }) => self.failure(detail.clone()),
                None => DataFusionError::Execution(inner.to_string()),
            },
            other => DataFusionError::Execution(other.to_string()),
        }
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("table", &self.table)
            .field("encrypted", &self.unwrapper.is_some())
            .finish_non_exhaustive()
    }
}

/// `batch`'s columns in `schema`'s order (the reader yields the file's order; a table's is the
/// contract's), under `schema`.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> datafusion::common::Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            batch.column_by_name(f.name()).cloned().ok_or_else(|| {
                DataFusionError::Internal(format!("the scan lost column {}", f.name()))
            })
        })
        .collect::<datafusion::common::Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

#[async_trait::async_trait]
impl TableProvider for DatasetTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        let shared = {
            let mut scans = self.source.scans.lock().expect("scans lock");
            if self.source.sharing.load(Ordering::Relaxed) {
                let (tx, rx) = tokio::sync::mpsc::channel(SHARED_BATCHES);
                scans.shared.push((Arc::clone(&schema), tx));
                Some(rx)
            } else {
                scans.alone += 1;
                None
            }
        };
        let partition: Arc<dyn PartitionStream> = Arc::new(DatasetPartition {
            schema: Arc::clone(&schema),
            source: Arc::clone(&self.source),
            shared: Mutex::new(shared),
        });
        Ok(Arc::new(StreamingTableExec::try_new(
            schema,
            vec![partition],
            None,
            vec![],
            false,
            limit,
        )?))
    }
}

/// One scan of a dataset: the columns asked for, decrypted as they stream, from the shared
/// reader or read on its own.
#[derive(Debug)]
struct DatasetPartition {
    schema: SchemaRef,
    source: Arc<Source>,
    /// Where the shared reader's batches arrive (taken by the first execution; a plan executed
    /// again reads on its own).
    shared: Mutex<Option<BatchReceiver>>,
}

impl PartitionStream for DatasetPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = Arc::clone(&self.schema);
        let shared = self.shared.lock().expect("receiver lock").take();
        let batches = match shared {
            // The reader hands over every record of the dataset, or an error: a hand-off that
            // ends short (its task gone) fails the scan rather than aggregate part of the data.
            Some(rx) => {
                let source = Arc::clone(&self.source);
                futures::stream::unfold((rx, 0u64, false), move |(mut rx, seen, ended)| {
                    let source = Arc::clone(&source);
                    async move {
                        if ended {
                            return None;
                        }
                        match rx.recv().await {
                            Some(b) => {
                                let seen = seen + b.as_ref().map_or(0, |b| b.num_rows() as u64);
                                Some((b, (rx, seen, false)))
                            }
                            None if seen < source.rows => {
                                let short = source.failure(format!(
                                    "its reader stopped after {seen} of {} records",
                                    source.rows
                                ));
                                Some((Err(short), (rx, seen, true)))
                            }
                            None => None,
                        }
                    }
                })
                .boxed()
            }
            None => {
                let source = Arc::clone(&self.source);
                let columns: Vec<&str> =
                    schema.fields().iter().map(|f| f.name().as_str()).collect();
                let schema = Arc::clone(&schema);
                self.source
                    .open(&columns)
                    .map(move |batch| {
                        if *source.cancel.borrow() {
                            return Err(DataFusionError::External(Box::new(
                                ScanFailure::Cancelled,
                            )));
                        }
                        let batch = batch?;
                        source
                            .records
                            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                        conform(&batch, &schema)
                    })
                    .boxed()
            }
        };
        Box::pin(RecordBatchStreamAdapter::new(schema, batches))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_types_name_arrow_types() {
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        assert!(type_matches("string", &dict));
        assert!(type_matches("string", &DataType::LargeUtf8));
        assert!(type_matches("uint32", &DataType::UInt32));
        assert!(!type_matches("uint32", &DataType::Float64));
        assert!(type_matches("float64", &DataType::Float64));
        assert!(type_matches("decimal(12,2)", &DataType::Decimal128(12, 2)));
        assert!(type_matches("decimal(12, 2)", &DataType::Decimal128(12, 2)));
        assert!(!type_matches("decimal(12,2)", &DataType::Decimal128(12, 3)));
        assert!(type_matches("date", &DataType::Date32));
        assert!(!type_matches("string", &DataType::Int64));
    }
}
