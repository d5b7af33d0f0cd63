//! Differential privacy for a contract that asks for it (`output.differential_privacy`), with
//! the noise, its calibration and its privacy accounting from OpenDP (Harvard's maintained DP
//! library: `make_laplace`, `make_laplace_threshold`, `make_gaussian`,
//! `make_gaussian_threshold`, `make_zCDP_to_approxDP`, `make_fix_delta` and their privacy
//! maps); no sampling code is written here.
//!
//! The unit of privacy is one record of one input. Each **release aggregate** (see [`super::rules`])
//! is a statistic of its groups; with DP:
//!
//! - a record counts in at most one group of a release aggregate: no join under it (a record
//!   could match several rows), no DISTINCT, no ROLLUP/CUBE/GROUPING SETS;
//! - which groups are released is decided on a noisy count: with GROUP BY, OpenDP's threshold
//!   mechanism (propose-test-release over the groups' counts, threshold `k`), which costs δ;
//!   without, the one group's count is noised and released if it reaches `k`;
//! - each released value is noised: `COUNT(*)` is the noisy count itself, `COUNT(x)` gets its
//!   own noise, `SUM(x)` is taken over `x` clamped to the contract's `bounds` (sensitivity
//!   `max(|lower|, |upper|)`), and `AVG(x)` is a noisy clamped sum over a noisy count, clamped
//!   to the bounds;
//! - the run's ε is split evenly over the contract's release aggregates, and each aggregate's
//!   share evenly over its noisy statistics (sequential composition); δ is split evenly over
//!   the aggregates. OpenDP's privacy maps check each measurement's (ε, δ) against its share
//!   before anything runs.
//!
//! The mechanism is the contract's. **Laplace** (pure ε-DP for the values): an aggregate's δ is
//! spent by its group threshold. **Gaussian** (discrete Gaussian noise, calibrated in zero-
//! concentrated DP and converted to (ε, δ) by OpenDP's `make_zCDP_to_approxDP` at a fixed δ):
//! an aggregate's δ is split evenly over its measurements (the threshold's own δ included), so
//! each is (ε_each, δ_each)-DP and the run (ε, δ)-DP by basic composition.

use std::collections::HashMap;
use std::sync::Arc;

use conclave_contract::{DifferentialPrivacy, Mechanism};
use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, RecordBatchOptions, UInt64Array,
};
use datafusion::arrow::compute::{SortColumn, cast, concat_batches, lexsort_to_indices, take};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::DataFusionError;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, cast as cast_expr, lit, when};
use opendp::combinators::{make_fix_delta, make_zCDP_to_approxDP};
use opendp::core::Measurement;
use opendp::domains::{AtomDomain, MapDomain, VectorDomain};
use opendp::measurements::{
    make_gaussian, make_gaussian_threshold, make_laplace, make_laplace_threshold,
};
use opendp::measures::{Approximate, MaxDivergence, ZeroConcentratedDivergence};
use opendp::metrics::{AbsoluteDistance, L0PInfDistance, L1Distance, L2Distance};

use super::rules::{self, RuleViolation};

type CountNoise =
    Measurement<VectorDomain<AtomDomain<i64>>, L1Distance<i64>, MaxDivergence, Vec<i64>>;
type SumNoise =
    Measurement<VectorDomain<AtomDomain<f64>>, L1Distance<f64>, MaxDivergence, Vec<f64>>;
type GroupThreshold = Measurement<
    MapDomain<AtomDomain<u64>, AtomDomain<i64>>,
    L0PInfDistance<1, AbsoluteDistance<i64>>,
    Approximate<MaxDivergence>,
    HashMap<u64, i64>,
>;
type GaussianCounts = Measurement<
    VectorDomain<AtomDomain<i64>>,
    L2Distance<i64>,
    ZeroConcentratedDivergence,
    Vec<i64>,
>;
type GaussianSums = Measurement<
    VectorDomain<AtomDomain<f64>>,
    L2Distance<f64>,
    ZeroConcentratedDivergence,
    Vec<f64>,
>;
type GaussianThreshold = Measurement<
    MapDomain<AtomDomain<u64>, AtomDomain<i64>>,
    L0PInfDistance<2, AbsoluteDistance<i64>>,
    Approximate<ZeroConcentratedDivergence>,
    HashMap<u64, i64>,
>;
/// A measurement's function, whichever its mechanism.
type Noisy<T> = Box<dyn Fn(&T) -> Result<T, opendp::error::Error>>;

/// What one aggregate of a release aggregate releases.
#[derive(Debug, Clone, PartialEq)]
pub enum Statistic {
    /// `COUNT(*)` (or of a literal): the group's noisy count.
    Rows,
    /// `COUNT(x)`: its own noisy count.
    Count,
    /// `SUM(x)` over `x` clamped to `[lower, upper]`.
    Sum { lower: f64, upper: f64 },
    /// `AVG(x)`: a noisy clamped sum over a noisy count, clamped to `[lower, upper]`.
    Avg { lower: f64, upper: f64 },
}

impl Statistic {
    /// How many noisy measurements it takes beyond the group count.
    fn measurements(&self) -> usize {
        match self {
            Statistic::Rows => 0,
            Statistic::Count | Statistic::Sum { .. } => 1,
            Statistic::Avg { .. } => 2,
        }
    }
}

/// The noise of one release aggregate, calibrated: the scales OpenDP's privacy maps accepted
/// (its measurements are rebuilt from them where they run: they are not `Send`).
#[derive(Debug, Clone, PartialEq)]
pub struct GateNoise {
    pub mechanism: Mechanism,
    /// One per aggregate expression of the release aggregate.
    pub statistics: Vec<Statistic>,
    /// ε of each noisy measurement.
    pub epsilon_each: f64,
    /// δ of each noisy measurement (0 with Laplace).
    pub delta_each: f64,
    /// (ε, δ) the group selection costs (OpenDP's map); the group count's ε without GROUP BY.
    pub selection: (f64, f64),
    /// The scale of the threshold mechanism's noise, with GROUP BY.
    threshold_scale: Option<f64>,
    /// The smallest noisy count released (`k`).
    threshold: i64,
    /// The scale of counts' noise (and of the group count without GROUP BY): sensitivity 1.
    count_scale: f64,
    /// Per SUM/AVG statistic (by position), its clamped sum's noise scale.
    sum_scales: Vec<Option<f64>>,
}

fn opendp_error(e: opendp::error::Error) -> String {
    match e.message {
        Some(m) => format!("{}: {m}", e.variant),
        None => e.variant.to_string(),
    }
}

/// Laplace noise on a vector of counts, each record in at most one (L1 sensitivity 1).
fn count_measurement(scale: f64) -> Result<CountNoise, opendp::error::Error> {
    make_laplace(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L1Distance::<i64>::default(),
        scale,
        None,
    )
}

/// Laplace noise on a vector of sums of clamped values.
fn sum_measurement(scale: f64) -> Result<SumNoise, opendp::error::Error> {
    make_laplace(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        L1Distance::<f64>::default(),
        scale,
        None,
    )
}

/// OpenDP's Laplace threshold mechanism over the groups' counts (group → count), releasing the
/// groups whose noisy count reaches `threshold`.
fn threshold_measurement(
    scale: f64,
    threshold: i64,
) -> Result<GroupThreshold, opendp::error::Error> {
    make_laplace_threshold(
        MapDomain::new(AtomDomain::<u64>::default(), AtomDomain::<i64>::default()),
        L0PInfDistance(AbsoluteDistance::<i64>::default()),
        scale,
        threshold,
        None,
    )
}

/// Discrete Gaussian noise on a vector of counts, each record in at most one (L2 sensitivity
/// 1), in zero-concentrated DP.
fn gaussian_counts(scale: f64) -> Result<GaussianCounts, opendp::error::Error> {
    make_gaussian(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L2Distance::<i64>::default(),
        scale,
        None,
    )
}

/// Gaussian noise on a vector of sums of clamped values, in zero-concentrated DP.
fn gaussian_sums(scale: f64) -> Result<GaussianSums, opendp::error::Error> {
    make_gaussian(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        L2Distance::<f64>::default(),
        scale,
        None,
    )
}

/// OpenDP's Gaussian threshold mechanism over the groups' counts.
fn gaussian_threshold(
    scale: f64,
    threshold: i64,
) -> Result<GaussianThreshold, opendp::error::Error> {
    make_gaussian_threshold(
        MapDomain::new(AtomDomain::<u64>::default(), AtomDomain::<i64>::default()),
        L0PInfDistance(AbsoluteDistance::<i64>::default()),
        scale,
        threshold,
        None,
    )
}

/// A measurement as its function alone.
fn noisy<DI, MI, MO, T>(m: Measurement<DI, MI, MO, T>) -> Noisy<T>
where
    DI: opendp::core::Domain<Carrier = T> + 'static,
    MI: opendp::core::Metric + 'static,
    MO: opendp::core::Measure + 'static,
    T: 'static,
{
    Box::new(move |v| m.invoke(v))
}

/// The noise on counts of a run with `mechanism`, at `scale`.
fn count_noiser(mechanism: Mechanism, scale: f64) -> Result<Noisy<Vec<i64>>, opendp::error::Error> {
    Ok(match mechanism {
        Mechanism::Laplace => noisy(count_measurement(scale)?),
        Mechanism::Gaussian => noisy(gaussian_counts(scale)?),
    })
}

/// The noise on clamped sums of a run with `mechanism`, at `scale`.
fn sum_noiser(mechanism: Mechanism, scale: f64) -> Result<Noisy<Vec<f64>>, opendp::error::Error> {
    Ok(match mechanism {
        Mechanism::Laplace => noisy(sum_measurement(scale)?),
        Mechanism::Gaussian => noisy(gaussian_sums(scale)?),
    })
}

/// The group selection of a run with `mechanism`, at `scale`, releasing noisy counts from
/// `threshold` up.
fn threshold_noiser(
    mechanism: Mechanism,
    scale: f64,
    threshold: i64,
) -> Result<Noisy<HashMap<u64, i64>>, opendp::error::Error> {
    Ok(match mechanism {
        Mechanism::Laplace => noisy(threshold_measurement(scale, threshold)?),
        Mechanism::Gaussian => noisy(gaussian_threshold(scale, threshold)?),
    })
}

/// The ε a zero-concentrated measurement's map `rho` (at the input distance in question) comes
/// to at δ `delta`, by OpenDP's conversion (`make_zCDP_to_approxDP`, then `make_fix_delta`).
fn gaussian_epsilon<DI, MI, TO>(
    m: Measurement<DI, MI, ZeroConcentratedDivergence, TO>,
    d_in: &MI::Distance,
    delta: f64,
) -> Result<f64, String>
where
    DI: opendp::core::Domain,
    MI: 'static + opendp::core::Metric,
    (DI, MI): opendp::core::MetricSpace,
{
    make_zCDP_to_approxDP(m)
        .and_then(|m| make_fix_delta(&m, delta))
        .and_then(|m| m.map(d_in))
        .map(|(epsilon, _)| epsilon)
        .map_err(opendp_error)
}

/// The scale of noise for counts at (ε `epsilon`, δ `delta`) (OpenDP's privacy map confirms
/// it; δ matters to the Gaussian only).
fn count_noise(mechanism: Mechanism, epsilon: f64, delta: f64) -> Result<f64, String> {
    match mechanism {
        Mechanism::Laplace => calibrate(1.0 / epsilon, epsilon, |scale| {
            count_measurement(scale)
                .and_then(|m| m.map(&1))
                .map_err(opendp_error)
        }),
        Mechanism::Gaussian => {
            let spends = |scale| {
                gaussian_counts(scale)
                    .map_err(opendp_error)
                    .and_then(|m| gaussian_epsilon(m, &1, delta))
            };
            gaussian_scale(1.0, epsilon, delta, spends)
        }
    }
}

/// The scale of noise for sums of values within `[-bound, bound]` at (ε, δ).
fn sum_noise(mechanism: Mechanism, epsilon: f64, delta: f64, bound: f64) -> Result<f64, String> {
    match mechanism {
        Mechanism::Laplace => calibrate(bound / epsilon, epsilon, |scale| {
            sum_measurement(scale)
                .and_then(|m| m.map(&bound))
                .map_err(opendp_error)
        }),
        Mechanism::Gaussian => {
            let spends = |scale| {
                gaussian_sums(scale)
                    .map_err(opendp_error)
                    .and_then(|m| gaussian_epsilon(m, &bound, delta))
            };
            gaussian_scale(bound, epsilon, delta, spends)
        }
    }
}

/// The smallest Gaussian scale for `sensitivity` whose measurement, by `spends` (OpenDP's map,
/// converted at δ `delta`), spends at most `epsilon`.
fn gaussian_scale(
    sensitivity: f64,
    epsilon: f64,
    delta: f64,
    spends: impl Fn(f64) -> Result<f64, String> + Copy,
) -> Result<f64, String> {
    calibrate(gaussian_start(sensitivity, epsilon, delta), epsilon, spends)
        .map(|scale| tighten(scale, epsilon, spends))
}

/// Where the search for a Gaussian scale starts: the σ of the ρ that the classic conversion
/// ε = ρ + 2·sqrt(ρ·ln(1/δ)) (Bun and Steinke 2016, Prop. 1.3) allows. OpenDP's conversion is
/// tighter, so it accepts this σ; [`tighten`] then finds the smallest σ it accepts.
fn gaussian_start(sensitivity: f64, epsilon: f64, delta: f64) -> f64 {
    let l = (1.0 / delta).ln();
    let rho = ((l + epsilon).sqrt() - l.sqrt()).powi(2);
    sensitivity / (2.0 * rho).sqrt()
}

/// The smallest scale at or below `passing` (one whose measurement spends at most `epsilon`)
/// that still does, to a relative 1e-6: a bisection against OpenDP's privacy map (an error
/// counts as not fitting).
fn tighten(passing: f64, epsilon: f64, spends: impl Fn(f64) -> Result<f64, String>) -> f64 {
    let fits = |scale: f64| spends(scale).is_ok_and(|spent| spent <= epsilon);
    let (mut lo, mut hi) = (passing / 2.0, passing);
    while lo > passing / 1024.0 && fits(lo) {
        hi = lo;
        lo /= 2.0;
    }
    while hi - lo > hi * 1e-6 {
        let mid = (lo + hi) / 2.0;
        if fits(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// The smallest scale (from `start` up, in small steps) whose measurement OpenDP's privacy map
/// says spends at most `epsilon` (its maps round conservatively).
fn calibrate(
    start: f64,
    epsilon: f64,
    spends: impl Fn(f64) -> Result<f64, String>,
) -> Result<f64, String> {
    let mut scale = start;
    for _ in 0..64 {
        let spent = spends(scale)?;
        if spent <= epsilon {
            return Ok(scale);
        }
        scale *= 1.0 + 1e-9_f64.max((spent - epsilon) / epsilon);
    }
    Err(format!(
        "no noise scale from {start} up meets epsilon {epsilon}"
    ))
}

/// The DP plan of every release aggregate of a contract (`gates`, query by query), or why the
/// contract cannot be run with differential privacy (with the query's position).
///
/// # Errors
/// A [`RuleViolation`] naming what DP cannot bound (a join, DISTINCT, grouping sets, an
/// unbounded SUM/AVG), or the δ the group selection needs beyond the contract's.
pub fn plan(
    gates: &[Vec<Aggregate>],
    dp: &DifferentialPrivacy,
    k: u64,
) -> Result<Vec<Vec<GateNoise>>, (usize, RuleViolation)> {
    let total: usize = gates.iter().map(Vec::len).sum();
    if total == 0 {
        return Ok(gates.iter().map(|_| Vec::new()).collect());
    }
    let epsilon_gate = dp.epsilon / total as f64;
    let delta_gate = dp.delta / total as f64;
    let threshold = i64::try_from(k).unwrap_or(i64::MAX).max(1);
    let mut out = Vec::new();
    for (q, query_gates) in gates.iter().enumerate() {
        let fail = |v: RuleViolation| (q, v);
        let unsupported = |what: String| (q, RuleViolation::Unsupported(what));
        let mut noises = Vec::new();
        for gate in query_gates {
            let statistics = statistics(gate, dp).map_err(fail)?;
            let grouped = !gate.group_expr.is_empty();
            let n = 1 + statistics
                .iter()
                .map(Statistic::measurements)
                .sum::<usize>();
            let epsilon_each = epsilon_gate / n as f64;
            let delta_each = match dp.mechanism {
                Mechanism::Laplace => 0.0,
                Mechanism::Gaussian => delta_gate / n as f64,
            };
            let count_scale =
                count_noise(dp.mechanism, epsilon_each, delta_each).map_err(&unsupported)?;
            let sum_scales = statistics
                .iter()
                .map(|s| match s {
                    Statistic::Sum { lower, upper } | Statistic::Avg { lower, upper } => {
                        let bound = lower.abs().max(upper.abs());
                        sum_noise(dp.mechanism, epsilon_each, delta_each, bound).map(Some)
                    }
                    _ => Ok(None),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(&unsupported)?;
            // The selection needs `needed` of a share `share` of the contract's δ: said as the
            // contract δ that would cover it.
            let too_little_delta = |needed: f64, share: f64| {
                format!(
                    "with differential privacy, releasing which groups exist (GROUP BY) at k = {k} and this epsilon needs output.differential_privacy.delta of about {:.3e} or more, and the contract's is {:.3e}: raise it (or k, or epsilon)",
                    needed
                        * if share > 0.0 {
                            dp.delta / share
                        } else {
                            total as f64
                        },
                    dp.delta
                )
            };
            let (threshold_scale, selection) = match (grouped, dp.mechanism) {
                (false, _) => (None, (epsilon_each, delta_each)),
                (true, Mechanism::Laplace) => {
                    let spends = |scale: f64| {
                        threshold_measurement(scale, threshold)
                            .and_then(|m| m.map(&(1, 1, 1)))
                            .map_err(opendp_error)
                    };
                    let scale =
                        calibrate(1.0 / epsilon_each, epsilon_each, |s| spends(s).map(|d| d.0))
                            .map_err(&unsupported)?;
                    let spent = spends(scale).map_err(&unsupported)?;
                    if spent.1 > delta_gate {
                        return Err(unsupported(too_little_delta(spent.1, delta_gate)));
                    }
                    (Some(scale), spent)
                }
                (true, Mechanism::Gaussian) => {
                    // The threshold's own δ (a group of one record passing it) comes out of
                    // its share first; the rest pays for its noise, converted from zCDP.
                    let spends = |scale: f64| {
                        let m = gaussian_threshold(scale, threshold).map_err(opendp_error)?;
                        let (_, own) = m.map(&(1, 1, 1)).map_err(opendp_error)?;
                        if own >= delta_each {
                            return Err(too_little_delta(own, delta_each));
                        }
                        make_zCDP_to_approxDP(m)
                            .and_then(|m| make_fix_delta(&m, delta_each))
                            .and_then(|m| m.map(&(1, 1, 1)))
                            .map(|(epsilon, _)| epsilon)
                            .map_err(opendp_error)
                    };
                    let scale = gaussian_scale(1.0, epsilon_each, delta_each, spends)
                        .map_err(&unsupported)?;
                    let epsilon = spends(scale).map_err(&unsupported)?;
                    (Some(scale), (epsilon, delta_each))
                }
            };
            noises.push(GateNoise {
                mechanism: dp.mechanism,
                statistics,
                epsilon_each,
                delta_each,
                selection,
                threshold_scale,
                threshold,
                count_scale,
                sum_scales,
            });
        }
        out.push(noises);
    }
    Ok(out)
}

/// The statistics of a release aggregate under DP, or what DP cannot bound in it.
fn statistics(gate: &Aggregate, dp: &DifferentialPrivacy) -> Result<Vec<Statistic>, RuleViolation> {
    let unsupported = |what: &str| {
        Err(RuleViolation::Unsupported(format!(
            "{what} with differential privacy"
        )))
    };
    if gate
        .group_expr
        .iter()
        .any(|g| matches!(g, Expr::GroupingSet(_)))
    {
        return unsupported("ROLLUP, CUBE or GROUPING SETS (a record counts in several groups)");
    }
    if has_join(&gate.input) {
        return unsupported(
            "a join under an aggregation (one record can match several rows, so its effect is unbounded)",
        );
    }
    let mut out = Vec::new();
    for e in &gate.aggr_expr {
        let Expr::AggregateFunction(f) = unalias(e) else {
            return unsupported(&format!("the aggregate {e}"));
        };
        if f.params.distinct {
            return unsupported("DISTINCT in an aggregate");
        }
        let name = f.func.name().to_ascii_lowercase();
        if f.params
            .args
            .iter()
            .any(|a| matches!(a, Expr::Literal(v, _) if v.is_null()))
        {
            return unsupported(&format!("{}(NULL)", name.to_ascii_uppercase()));
        }
        let arg = f
            .params
            .args
            .iter()
            .find(|a| !matches!(a, Expr::Literal(..)));
        let stat = match (name.as_str(), arg) {
            ("count", None) => Statistic::Rows,
            ("count", Some(_)) => Statistic::Count,
            (kind @ ("sum" | "avg"), Some(arg)) => {
                let sources = rules::expr_sources(&gate.input, arg)?;
                let mut range: Option<(f64, f64)> = None;
                for (table, column) in &sources {
                    let Some([lower, upper]) = dp
                        .bounds
                        .iter()
                        .find(|(c, _)| c.eq_ignore_ascii_case(column))
                        .map(|(_, b)| *b)
                    else {
                        return Err(RuleViolation::Unsupported(format!(
                            "{}({column}) of table {table} with differential privacy needs bounds for {column} (output.differential_privacy.bounds = {{ {column} = [lower, upper] }}): they bound one record's effect on it",
                            kind.to_ascii_uppercase()
                        )));
                    };
                    range = Some(match range {
                        None => (lower, upper),
                        Some((l, u)) => (l.min(lower), u.max(upper)),
                    });
                }
                let Some((lower, upper)) = range else {
                    return unsupported(&format!(
                        "{}() of no input column",
                        kind.to_ascii_uppercase()
                    ));
                };
                if kind == "sum" {
                    Statistic::Sum { lower, upper }
                } else {
                    Statistic::Avg { lower, upper }
                }
            }
            _ => return unsupported(&format!("{}()", name.to_ascii_uppercase())),
        };
        out.push(stat);
    }
    Ok(out)
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}

fn has_join(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Join(_)) || plan.inputs().into_iter().any(has_join)
}

/// `gate` with every SUM and AVG taken over its argument clamped to its bounds (as a double).
///
/// # Errors
/// DataFusion's, should the aggregate not be rebuilt.
pub fn clamped(gate: &Aggregate, noise: &GateNoise) -> datafusion::common::Result<Aggregate> {
    let mut aggr = Vec::with_capacity(gate.aggr_expr.len());
    for (e, stat) in gate.aggr_expr.iter().zip(&noise.statistics) {
        let (Statistic::Sum { lower, upper } | Statistic::Avg { lower, upper }) = stat else {
            aggr.push(e.clone());
            continue;
        };
        let mut e = e.clone();
        let mut target = &mut e;
        while let Expr::Alias(a) = target {
            target = a.expr.as_mut();
        }
        if let Expr::AggregateFunction(f) = target {
            for arg in f.params.args.iter_mut() {
                if matches!(arg, Expr::Literal(..)) {
                    continue;
                }
                let x = cast_expr(arg.clone(), DataType::Float64);
                *arg = when(x.clone().lt(lit(*lower)), lit(*lower))
                    .when(x.clone().gt(lit(*upper)), lit(*upper))
                    .otherwise(x)?;
            }
        }
        aggr.push(e);
    }
    Aggregate::try_new(Arc::clone(&gate.input), gate.group_expr.clone(), aggr)
}

fn internal(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(e.to_string())
}

fn int64(b: &RecordBatch, i: usize) -> datafusion::common::Result<Int64Array> {
    let c = cast(b.column(i), &DataType::Int64)?;
    Ok(c.as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| internal("a count is not an Int64"))?
        .clone())
}

fn float64(b: &RecordBatch, i: usize) -> datafusion::common::Result<Float64Array> {
    let c = cast(b.column(i), &DataType::Float64)?;
    Ok(c.as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| internal("a sum is not a Float64"))?
        .clone())
}

/// Column `column` of `b` (a count, cast to Int64), at the rows `indices`; a null counts 0.
fn kept_counts(
    b: &RecordBatch,
    column: usize,
    indices: &UInt64Array,
) -> datafusion::common::Result<Vec<i64>> {
    let kept = take(&int64(b, column)?, indices, None)?;
    Ok(kept
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| internal("a count is not an Int64"))?
        .iter()
        .map(|v| v.unwrap_or(0))
        .collect())
}

/// The released groups of a release aggregate run with DP: `batches` are the rows of its
/// [`clamped`] form with hidden counts (the last `hidden` columns, `COUNT(*)` first), `target`
/// its original output schema. Selects groups on their noisy counts (at least `k`), noises
/// every value, and returns the kept groups in `target`'s types with how many were withheld.
///
/// # Errors
/// OpenDP's or Arrow's failure (a value out of a type's range), as an internal error.
pub fn release(
    noise: &GateNoise,
    batches: Vec<RecordBatch>,
    hidden: usize,
    k: u64,
    target: &SchemaRef,
) -> datafusion::common::Result<(Vec<RecordBatch>, u64)> {
    let Some(first) = batches.first() else {
        return Ok((Vec::new(), 0));
    };
    let b = concat_batches(&first.schema(), &batches)?;
    let width = b.num_columns();
    let aggregates = noise.statistics.len();
    let keys = width - hidden - aggregates;
    let rows = int64(&b, width - hidden)?;
    let fail = |e: opendp::error::Error| internal(opendp_error(e));
    let counts = count_noiser(noise.mechanism, noise.count_scale).map_err(fail)?;
    let sums: Vec<Option<Noisy<Vec<f64>>>> = noise
        .sum_scales
        .iter()
        .map(|s| s.map(|s| sum_noiser(noise.mechanism, s)).transpose())
        .collect::<Result<_, _>>()
        .map_err(fail)?;

    // Which groups are released, with their noisy counts.
    let mut kept: Vec<(u64, i64)> = match noise.threshold_scale {
        Some(scale) => {
            let threshold =
                threshold_noiser(noise.mechanism, scale, noise.threshold).map_err(fail)?;
            let counts: HashMap<u64, i64> = (0..b.num_rows() as u64)
                .map(|i| (i, rows.value(i as usize)))
                .collect();
            threshold(&counts).map_err(fail)?.into_iter().collect()
        }
        None => {
            let exact: Vec<i64> = rows.values().iter().copied().collect();
            let noisy = counts(&exact).map_err(fail)?;
            noisy
                .into_iter()
                .enumerate()
                .map(|(i, c)| (i as u64, c))
                .filter(|(_, c)| *c >= 0 && *c as u64 >= k)
                .collect()
        }
    };
    // In the order of the groups' keys: the engine's output order (first seen per hash
    // partition, withheld groups included) depends on the data.
    kept.sort_unstable();
    if keys > 0 && kept.len() > 1 {
        let candidates = UInt64Array::from(kept.iter().map(|(i, _)| *i).collect::<Vec<_>>());
        let sort_columns = (0..keys)
            .map(|i| {
                Ok(SortColumn {
                    values: take(b.column(i), &candidates, None)?,
                    options: None,
                })
            })
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let order = lexsort_to_indices(&sort_columns, None)?;
        kept = order.values().iter().map(|&o| kept[o as usize]).collect();
    }
    // With GROUP BY, how many groups were not released is not said: the number of groups
    // there are is exact, not noised. Without, the one group's withholding is decided on its
    // noisy count.
    let withheld = if noise.threshold_scale.is_some() {
        0
    } else {
        (b.num_rows() - kept.len()) as u64
    };
    let indices = UInt64Array::from(kept.iter().map(|(i, _)| *i).collect::<Vec<_>>());
    let noisy_rows: Vec<i64> = kept.iter().map(|(_, c)| (*c).max(0)).collect();

    let mut columns: Vec<ArrayRef> = Vec::with_capacity(keys + aggregates);
    for i in 0..keys {
        columns.push(take(b.column(i), &indices, None)?);
    }
    // The hidden COUNT(x) of each aggregate's argument follows COUNT(*), in aggregate order.
    let mut covered = width - hidden + 1;
    for (j, stat) in noise.statistics.iter().enumerate() {
        let column = keys + j;
        let pick = |a: &dyn Array| take(a, &indices, None);
        let value: ArrayRef = match stat {
            Statistic::Rows => Arc::new(Int64Array::from(noisy_rows.clone())),
            Statistic::Count => {
                let exact = kept_counts(&b, column, &indices)?;
                let noisy = counts(&exact).map_err(fail)?;
                Arc::new(Int64Array::from(
                    noisy.into_iter().map(|c| c.max(0)).collect::<Vec<_>>(),
                ))
            }
            Statistic::Sum { .. } => {
                let exact = float64(&b, column)?;
                let exact = pick(&exact)?;
                let exact: Vec<f64> = as_f64s(&exact)?;
                let sums = sums[j].as_ref().ok_or_else(|| internal("no sum noise"))?;
                Arc::new(Float64Array::from(sums(&exact).map_err(fail)?))
            }
            Statistic::Avg { lower, upper } => {
                let mean = as_f64s(&pick(&float64(&b, column)?)?)?;
                let count = kept_counts(&b, covered, &indices)?;
                let sum: Vec<f64> = mean
                    .iter()
                    .zip(&count)
                    .map(|(m, c)| m * *c as f64)
                    .collect();
                let sums = sums[j].as_ref().ok_or_else(|| internal("no sum noise"))?;
                let noisy_sum = sums(&sum).map_err(fail)?;
                let noisy_count = counts(&count).map_err(fail)?;
                Arc::new(Float64Array::from(
                    noisy_sum
                        .iter()
                        .zip(&noisy_count)
                        .map(|(s, c)| (*c >= 1).then(|| (s / *c as f64).clamp(*lower, *upper)))
                        .collect::<Vec<_>>(),
                ))
            }
        };
        covered += usize::from(!matches!(stat, Statistic::Rows));
        let want = target.field(keys + j).data_type();
        let value = if want.is_integer() {
            let rounded = as_f64s(&cast(&value, &DataType::Float64)?)?
                .into_iter()
                .map(|v| {
                    // Noise can take a value out of the column type's range (a negative sum of
                    // an unsigned column): the nearest value the type holds.
                    let (lowest, highest) = if want.is_unsigned_integer() {
                        (0.0, u64::MAX as f64)
                    } else {
                        (i64::MIN as f64, i64::MAX as f64)
                    };
                    v.round().clamp(lowest, highest)
                })
                .collect::<Vec<_>>();
            cast(&(Arc::new(Float64Array::from(rounded)) as ArrayRef), want)?
        } else {
            cast(&value, want)?
        };
        columns.push(value);
    }
    let schema: SchemaRef = Arc::new(Schema::new(
        target
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(kept.len())),
    )?;
    Ok((vec![batch], withheld))
}

/// The values of a Float64 array, nulls as 0 (an empty group's sum).
///
/// # Errors
/// A value that is not finite (a sum beyond f64's range: bounds too wide), whose sensitivity
/// the noise would no longer cover.
fn as_f64s(a: &ArrayRef) -> datafusion::common::Result<Vec<f64>> {
    a.as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| internal("a value is not a Float64"))?
        .iter()
        .map(|v| match v {
            None => Ok(0.0),
            Some(v) if v.is_finite() => Ok(v),
            Some(_) => Err(internal(
                "a clamped sum is beyond the range of a double: narrow the contract's bounds",
            )),
        })
        .collect()
}

/// How a query's values were noised, for its receipt.
pub fn describe(noises: &[GateNoise]) -> String {
    if noises.is_empty() {
        return "none".into();
    }
    let statistics: usize = noises
        .iter()
        .map(|n| {
            1 + n
                .statistics
                .iter()
                .map(Statistic::measurements)
                .sum::<usize>()
        })
        .sum();
    let epsilon: f64 = noises
        .iter()
        .map(|n| {
            n.selection.0
                + n.epsilon_each
                    * n.statistics
                        .iter()
                        .map(Statistic::measurements)
                        .sum::<usize>() as f64
        })
        .sum();
    let delta: f64 = noises
        .iter()
        .map(|n| {
            n.selection.1
                + n.delta_each
                    * n.statistics
                        .iter()
                        .map(Statistic::measurements)
                        .sum::<usize>() as f64
        })
        .sum();
    let mechanism = match noises[0].mechanism {
        Mechanism::Laplace => "laplace",
        Mechanism::Gaussian => "gaussian",
    };
    format!(
        "{mechanism} (OpenDP): {statistics} noisy measurements over {} aggregation(s), groups selected on noisy counts (those not released are not counted); epsilon {epsilon:.6}, delta {delta:.3e} spent by this query",
        noises.len()
    )
}
