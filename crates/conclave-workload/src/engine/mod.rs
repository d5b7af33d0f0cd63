//! Running an analysis contract inside the TEE with Apache DataFusion.
//!
//! Each input is registered as a table whose scan stream-decrypts the dataset with the key its
//! vault released, decoding only the columns the query needs (DataFusion pushes the projection
//! into the scan). Every query is planned, its plan checked against the contract's output rules
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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use conclave_contract::Contract;
use conclave_data::dataset::{self, KeyUnwrapper};
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

/// How far a run is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContractProgress {
    /// The query running (its name in the contract) and its position (from 0).
    pub query: String,
    pub query_index: usize,
    pub queries: usize,
    /// Records decoded so far in this query, over all its inputs.
    pub records: u64,
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
    for spec in &contract.inputs {
        let input = inputs
            .iter()
            .find(|i| i.table == spec.table)
            .ok_or_else(|| ContractRunError::Input {
                table: spec.table.clone(),
                detail: "no dataset was given for it".into(),
            })?;
        let schema = table_schema(spec, input).await?;
        let table = DatasetTable {
            schema,
            source: Arc::new(Source {
                table: spec.table.clone(),
                location: input.location.clone(),
                unwrapper: input.unwrapper.clone(),
                records: Arc::clone(&progress),
                cancel: cancel.clone(),
            }),
        };
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

    let mut results = Vec::new();
    let queries = contract.queries.len();
    for (index, (q, (plan, gates))) in contract.queries.iter().zip(plans).enumerate() {
        progress.store(0, Ordering::Relaxed);
        let tick = {
            let (report, progress, name) = (report.clone(), progress.clone(), q.name.clone());
            move || {
                report(ContractProgress {
                    query: name.clone(),
                    query_index: index,
                    queries,
                    // With differential privacy the exact number of records is not shown.
                    records: if private {
                        0
                    } else {
                        progress.load(Ordering::Relaxed)
                    },
                })
            }
        };
        tick();
        let ticker = {
            let tick = tick.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    tick();
                }
            })
        };
        let result = run_query(
            &ctx,
            &q.name,
            plan,
            gates,
            k,
            noise.as_ref().map(|n| n[index].as_slice()),
        )
        .await;
        ticker.abort();
        tick();
        results.push(result?);
    }
    Ok(ContractResult {
        contract: contract.name.clone(),
        digest: contract.digest(),
        k,
        queries: results,
    })
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
            .unwrap_or(DataType::Utf8),
    }
}

async fn run_query(
    ctx: &SessionContext,
    name: &str,
    plan: LogicalPlan,
    gates: Vec<Aggregate>,
    k: u64,
    noise: Option<&[privacy::GateNoise]>,
) -> Result<QueryResult, ContractRunError> {
    let fail = |e: DataFusionError| execution_error(name, e);
    let mut suppressed = 0u64;
    let mut replacements = Vec::with_capacity(gates.len());
    for (i, gate) in gates.iter().enumerate() {
        let (kept, withheld) = match noise.map(|n| &n[i]) {
            None => {
                let (counted, hidden) = rules::with_group_records(gate).map_err(fail)?;
                let batches = execute(ctx, &counted).await.map_err(fail)?;
                withhold_small_groups(batches, hidden, k).map_err(fail)?
            }
            Some(noise) => {
                let clamped = privacy::clamped(gate, noise).map_err(fail)?;
                let (counted, hidden) = rules::with_group_records(&clamped).map_err(fail)?;
                let batches = execute(ctx, &counted).await.map_err(fail)?;
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
/// the contract's order, once each is checked against the type the contract names.
async fn table_schema(
    spec: &conclave_contract::Input,
    input: &ContractInput,
) -> Result<SchemaRef, ContractRunError> {
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
    Ok(Arc::new(Schema::new(fields)))
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

struct Source {
    table: String,
    location: Location,
    unwrapper: Option<Arc<dyn KeyUnwrapper>>,
    /// Records decoded, over all inputs of the running query.
    records: Arc<AtomicU64>,
    cancel: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("table", &self.table)
            .field("encrypted", &self.unwrapper.is_some())
            .finish_non_exhaustive()
    }
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
        let partition: Arc<dyn PartitionStream> = Arc::new(DatasetPartition {
            schema: Arc::clone(&schema),
            source: Arc::clone(&self.source),
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

/// One scan of a dataset: the columns asked for, decrypted as they stream.
#[derive(Debug)]
struct DatasetPartition {
    schema: SchemaRef,
    source: Arc<Source>,
}

impl PartitionStream for DatasetPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = Arc::clone(&self.schema);
        let source = Arc::clone(&self.source);
        let failure = {
            let table = source.table.clone();
            move |detail: String| {
                DataFusionError::External(Box::new(ScanFailure::Input {
                    table: table.clone(),
                    detail,
                }))
            }
        };
        let open = {
            let (source, schema, failure) = (source.clone(), schema.clone(), failure.clone());
            async move {
                let columns: Vec<&str> =
                    schema.fields().iter().map(|f| f.name().as_str()).collect();
                let opened = match &source.unwrapper {
                    Some(u) => {
                        dataset::read_encrypted(
                            &source.location,
                            u.clone(),
                            Some(&columns),
                            BATCH_ROWS,
                        )
                        .await
                    }
                    None => dataset::read_plain(&source.location, Some(&columns), BATCH_ROWS).await,
                };
                opened.map_err(|e| failure(e.to_string()))
            }
        };
        let tampered = failure.clone();
        let batches = futures::stream::once(open)
            .map(
                move |opened| -> futures::stream::BoxStream<
                    'static,
                    datafusion::common::Result<RecordBatch>,
                > {
                    match opened {
                        Ok(stream) => {
                            let tampered = tampered.clone();
                            stream
                                .map(move |b| {
                                    b.map_err(|e| {
                                        tampered(format!("{e} (the dataset may be tampered with)"))
                                    })
                                })
                                .boxed()
                        }
                        Err(e) => futures::stream::iter([Err(e)]).boxed(),
                    }
                },
            )
            .flatten()
            .map(move |batch| {
                if *source.cancel.borrow() {
                    return Err(DataFusionError::External(Box::new(ScanFailure::Cancelled)));
                }
                let batch = batch?;
                source
                    .records
                    .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                // The reader yields the columns in the file's order; the table's is the contract's.
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
                    Arc::clone(&schema),
                    columns,
                    &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
                )?)
            });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches,
        ))
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
