//! A contract's output rules, checked on the query plan before anything runs.
//!
//! DataFusion plans each query; the optimised logical plan is then read from its root down to
//! the first aggregation on every path: the **release aggregates**. What lies above them
//! (projections, filters, sorts, limits, windows, unions and joins of aggregated rows) sees only
//! groups; what lies below them (scans, joins of raw rows, filters) never leaves the TEE. So:
//!
//! - a path from the root to a table scan without an aggregation is a non-aggregate output, and
//!   the query is refused;
//! - a release aggregate may only use COUNT, SUM and AVG (with or without DISTINCT): the
//!   aggregation analysis rule of AWS Clean Rooms, and for the same reason — MIN, MAX and the
//!   like release one record's value;
//! - no group key or aggregated value of a release aggregate may derive from a column the
//!   contract forbids (lineage is followed through aliases, subqueries, joins and unions, and
//!   across join keys: a key equals the other side's);
//!   `COUNT` of a forbidden column is allowed, since it counts rows and releases no value;
//! - below a release aggregate only the contract's own tables (each read once), projections,
//!   filters, equi-joins, unions and DISTINCT may appear: no aggregate functions or window
//!   functions (whose values would pass through the group keys), no limits or sorts with a
//!   fetch, no generated rows (VALUES, table functions such as `generate_series`), no cross
//!   joins — what would let one record stand for many, or pick one record out;
//! - aggregates take no FILTER clause, and what they aggregate is an input table's column as it
//!   is (renamed or cast at most): nothing computed (CASE, arithmetic) that could single records
//!   out while every row still counts;
//! - every release aggregate gets hidden counts: `COUNT(*)`, the workload's own count of each
//!   group's rows, and `COUNT(x)` (`COUNT(DISTINCT x)` for a DISTINCT aggregate) for every
//!   aggregated `x` (the rows or values it really covers), which
//!   [`super`] uses to withhold groups below `k` before the rest of the query sees them.
//!
//! What these rules do not stop is said in SECURITY.md: a many-to-many join still counts
//! joined rows, not records, and results can be differenced across queries and runs.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::common::{Column, JoinType};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};

/// The hidden column holding each group's record count in a gated aggregate.
pub const GROUP_RECORDS: &str = "__conclave_group_records";

/// The aggregate functions a release aggregate may use (DataFusion's canonical names).
pub const ALLOWED_AGGREGATES: [&str; 3] = ["count", "sum", "avg"];

/// Why a query breaks the contract's output rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleViolation {
    #[error(
        "the rows of table {table} would leave the TEE without aggregation: a contract's queries release only aggregates (GROUP BY with COUNT, SUM or AVG)"
    )]
    NotAggregate { table: String },
    #[error(
        "{function}() would release single records' values: a contract's queries aggregate with COUNT, SUM and AVG only"
    )]
    Aggregate { function: String },
    #[error(
        "column {column} of table {table} may never appear in output (the contract's forbidden_columns), not even as a group or inside {context}"
    )]
    Forbidden {
        table: String,
        column: String,
        context: String,
    },
    #[error("an output column is named {column}, which the contract forbids")]
    ForbiddenName { column: String },
    #[error("{0} is not supported in a contract's query")]
    Unsupported(String),
}

/// A table's column, by the names the contract gives them.
pub type Source = (String, String);

/// The release aggregates of `plan` (see the module's documentation), each checked against the
/// rules.
///
/// # Errors
/// The first [`RuleViolation`] found.
pub fn release_aggregates(
    plan: &LogicalPlan,
    forbidden: &BTreeSet<String>,
    tables: &BTreeSet<String>,
) -> Result<Vec<Aggregate>, RuleViolation> {
    let mut found = Vec::new();
    find(plan, &mut found)?;
    for a in &found {
        check_aggregate(a, forbidden)?;
        below(&a.input, tables, &mut Vec::new())?;
    }
    for field in plan.schema().fields() {
        if forbidden.contains(field.name()) {
            return Err(RuleViolation::ForbiddenName {
                column: field.name().clone(),
            });
        }
    }
    Ok(found)
}

fn find(plan: &LogicalPlan, found: &mut Vec<Aggregate>) -> Result<(), RuleViolation> {
    match plan {
        LogicalPlan::Aggregate(a) => {
            if !found.contains(a) {
                found.push(a.clone());
            }
            Ok(())
        }
        LogicalPlan::TableScan(t) => Err(RuleViolation::NotAggregate {
            table: t.table_name.table().to_string(),
        }),
        LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => Ok(()),
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Window(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::Distinct(_)
        | LogicalPlan::Union(_)
        | LogicalPlan::Join(_) => {
            for e in plan.expressions() {
                no_subquery(&e)?;
            }
            plan.inputs().into_iter().try_for_each(|p| find(p, found))
        }
        other => Err(RuleViolation::Unsupported(format!(
            "{} above the aggregation",
            other.display()
        ))),
    }
}

/// What may lie below a release aggregate (see the module's documentation); `scanned` lists
/// the tables already read under it.
fn below(
    plan: &LogicalPlan,
    tables: &BTreeSet<String>,
    scanned: &mut Vec<String>,
) -> Result<(), RuleViolation> {
    let unsupported = |what: String| Err(RuleViolation::Unsupported(what));
    match plan {
        LogicalPlan::TableScan(t) => {
            let name = t.table_name.table().to_string();
            if !tables.contains(&name) {
                return unsupported(format!(
                    "reading {name} (only the contract's input tables may be read)"
                ));
            }
            if scanned.contains(&name) {
                return unsupported(format!(
                    "reading table {name} twice under one aggregation (a self-join or a union with itself would count its records twice)"
                ));
            }
            if t.fetch.is_some() {
                return unsupported(format!("a limit on table {name}"));
            }
            for f in &t.filters {
                no_subquery(f)?;
            }
            scanned.push(name);
            Ok(())
        }
        LogicalPlan::Join(j) if j.on.is_empty() => unsupported(
            "a join without an equality between columns (a cross join) under an aggregation".into(),
        ),
        LogicalPlan::Aggregate(a) if !a.aggr_expr.is_empty() => unsupported(format!(
            "an aggregation under another ({}): only the outermost aggregation releases values",
            plan.display()
        )),
        LogicalPlan::Sort(s) if s.fetch.is_some() => {
            unsupported("a sort with a limit under an aggregation".into())
        }
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::Union(_)
        | LogicalPlan::Join(_)
        | LogicalPlan::Aggregate(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(_)) => {
            for e in plan.expressions() {
                no_subquery(&e)?;
            }
            plan.inputs()
                .into_iter()
                .try_for_each(|p| below(p, tables, scanned))
        }
        other => unsupported(format!("{} under an aggregation", other.display())),
    }
}

fn no_subquery(e: &Expr) -> Result<(), RuleViolation> {
    let mut bad = false;
    e.apply(|e| {
        if matches!(
            e,
            Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::OuterReferenceColumn(..)
        ) {
            bad = true;
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })
    .ok();
    if bad {
        Err(RuleViolation::Unsupported(
            "a subquery that the optimiser could not turn into a join".into(),
        ))
    } else {
        Ok(())
    }
}

use datafusion::common::tree_node::TreeNode as _;

fn check_aggregate(a: &Aggregate, forbidden: &BTreeSet<String>) -> Result<(), RuleViolation> {
    let check = |expr: &Expr, context: &str| -> Result<(), RuleViolation> {
        for (table, column) in expr_sources(&a.input, expr)? {
            if forbidden.contains(&column) {
                return Err(RuleViolation::Forbidden {
                    table,
                    column,
                    context: context.to_string(),
                });
            }
        }
        Ok(())
    };
    for g in &a.group_expr {
        check(g, "GROUP BY")?;
    }
    for e in &a.aggr_expr {
        let Expr::AggregateFunction(f) = unalias(e) else {
            return Err(RuleViolation::Unsupported(format!("the aggregate {e}")));
        };
        let name = f.func.name().to_ascii_lowercase();
        if !ALLOWED_AGGREGATES.contains(&name.as_str()) {
            return Err(RuleViolation::Aggregate {
                function: name.to_ascii_uppercase(),
            });
        }
        if f.params.filter.is_some() {
            return Err(RuleViolation::Unsupported(
                "FILTER (WHERE …) on an aggregate: the group's count would not cover what it aggregates".into(),
            ));
        }
        // What is aggregated must be an input table's column as it is (renamed or cast at
        // most): a computed value (CASE, arithmetic, a 0 for everyone but one record) could
        // single records out while every row still counts.
        for arg in f
            .params
            .args
            .iter()
            .filter(|a| !matches!(a, Expr::Literal(..)))
        {
            if name != "count" {
                check(arg, &format!("{}()", name.to_ascii_uppercase()))?;
            }
            if !bare_expr(&a.input, arg) {
                return Err(RuleViolation::Unsupported(format!(
                    "{}() of a computed value: aggregate an input table's column (renamed or cast at most)",
                    name.to_ascii_uppercase()
                )));
            }
        }
    }
    Ok(())
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}

/// Whether `e`, over `input`'s output, is an input table's column passed through unchanged
/// (renamed or cast at most) on every path to its scan.
fn bare_expr(input: &LogicalPlan, e: &Expr) -> bool {
    match e {
        Expr::Alias(a) => bare_expr(input, &a.expr),
        Expr::Cast(c) => bare_expr(input, &c.expr),
        Expr::TryCast(c) => bare_expr(input, &c.expr),
        Expr::Column(c) => input
            .schema()
            .index_of_column(c)
            .is_ok_and(|i| bare_at(input, i)),
        _ => false,
    }
}

fn bare_at(plan: &LogicalPlan, i: usize) -> bool {
    match plan {
        LogicalPlan::TableScan(_) => true,
        LogicalPlan::Projection(p) => bare_expr(&p.input, &p.expr[i]),
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(_)) => {
            bare_at(plan.inputs()[0], i)
        }
        LogicalPlan::Union(u) => u.inputs.iter().all(|input| bare_at(input, i)),
        LogicalPlan::Aggregate(a) if a.aggr_expr.is_empty() => {
            i < a.group_expr.len() && bare_expr(&a.input, &a.group_expr[i])
        }
        LogicalPlan::Join(j) => {
            let left = j.left.schema().fields().len();
            match j.join_type {
                JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {
                    if i < left {
                        bare_at(&j.left, i)
                    } else {
                        bare_at(&j.right, i - left)
                    }
                }
                JoinType::LeftSemi | JoinType::LeftAnti => bare_at(&j.left, i),
                JoinType::RightSemi | JoinType::RightAnti => bare_at(&j.right, i),
                _ => false,
            }
        }
        _ => false,
    }
}

/// The input columns an expression over `plan`'s output derives from.
pub(crate) fn expr_sources(
    plan: &LogicalPlan,
    expr: &Expr,
) -> Result<BTreeSet<Source>, RuleViolation> {
    no_subquery(expr)?;
    let mut out = BTreeSet::new();
    for c in expr.column_refs() {
        out.extend(column_sources(plan, c)?);
    }
    Ok(out)
}

fn column_sources(plan: &LogicalPlan, c: &Column) -> Result<BTreeSet<Source>, RuleViolation> {
    let i = plan
        .schema()
        .index_of_column(c)
        .map_err(|e| RuleViolation::Unsupported(format!("a column the plan cannot place ({e})")))?;
    sources_at(plan, i)
}

/// The input columns the `i`th output column of `plan` derives from. Where the position cannot
/// be followed exactly, every input column of the node counts (more, never fewer).
fn sources_at(plan: &LogicalPlan, i: usize) -> Result<BTreeSet<Source>, RuleViolation> {
    let all_of = |p: &LogicalPlan| -> Result<BTreeSet<Source>, RuleViolation> {
        let mut out = BTreeSet::new();
        for j in 0..p.schema().fields().len() {
            out.extend(sources_at(p, j)?);
        }
        Ok(out)
    };
    match plan {
        LogicalPlan::TableScan(t) => Ok(BTreeSet::from([(
            t.table_name.table().to_string(),
            t.projected_schema.field(i).name().clone(),
        )])),
        LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => Ok(BTreeSet::new()),
        LogicalPlan::Projection(p) => expr_sources(&p.input, &p.expr[i]),
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(_)) => {
            sources_at(plan.inputs()[0], i)
        }
        LogicalPlan::Aggregate(a) => {
            let groups = a.group_expr.len();
            let grouping_sets = a
                .group_expr
                .iter()
                .any(|g| matches!(g, Expr::GroupingSet(_)));
            if !grouping_sets && i < groups {
                expr_sources(&a.input, &a.group_expr[i])
            } else if !grouping_sets && i - groups < a.aggr_expr.len() {
                expr_sources(&a.input, &a.aggr_expr[i - groups])
            } else {
                let mut out = BTreeSet::new();
                for e in a.group_expr.iter().chain(&a.aggr_expr) {
                    out.extend(expr_sources(&a.input, e)?);
                }
                Ok(out)
            }
        }
        LogicalPlan::Window(w) => {
            let n = w.input.schema().fields().len();
            if i < n {
                sources_at(&w.input, i)
            } else {
                expr_sources(&w.input, &w.window_expr[i - n])
            }
        }
        LogicalPlan::Union(u) => {
            let mut out = BTreeSet::new();
            for input in &u.inputs {
                out.extend(sources_at(input, i)?);
            }
            Ok(out)
        }
        LogicalPlan::Join(j) => {
            let left = j.left.schema().fields().len();
            match j.join_type {
                JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {
                    let (side, at, left_side) = if i < left {
                        (&j.left, i, true)
                    } else {
                        (&j.right, i - left, false)
                    };
                    let mut out = sources_at(side, at)?;
                    // A join key equals the other side's key: a column in one carries what the
                    // other derives from too.
                    let (qualifier, field) = side.schema().qualified_field(at);
                    let column = Column::new(qualifier.cloned(), field.name());
                    for (l, r) in &j.on {
                        let (mine, theirs, other) = if left_side {
                            (l, r, &j.right)
                        } else {
                            (r, l, &j.left)
                        };
                        if mine.column_refs().contains(&column) {
                            out.extend(expr_sources(other, theirs)?);
                        }
                    }
                    Ok(out)
                }
                JoinType::LeftSemi | JoinType::LeftAnti => sources_at(&j.left, i),
                JoinType::RightSemi | JoinType::RightAnti => sources_at(&j.right, i),
                _ => {
                    let mut out = all_of(&j.left)?;
                    out.extend(all_of(&j.right)?);
                    Ok(out)
                }
            }
        }
        other => {
            let mut out = BTreeSet::new();
            for input in other.inputs() {
                out.extend(all_of(input)?);
            }
            Ok(out)
        }
    }
}

/// `a` with its hidden counts appended to its aggregates: [`GROUP_RECORDS`] (`COUNT(*)`), then
/// `COUNT(x)` for every argument `x` of its aggregates (the rows each really covers). Returns
/// the plan and the number of hidden columns (the last ones of its output).
///
/// # Errors
/// DataFusion's, should the aggregate not be rebuilt.
pub fn with_group_records(a: &Aggregate) -> datafusion::common::Result<(LogicalPlan, usize)> {
    let mut aggr = a.aggr_expr.clone();
    aggr.push(datafusion::functions_aggregate::count::count_all().alias(GROUP_RECORDS));
    let mut hidden = 1;
    for e in &a.aggr_expr {
        if let Expr::AggregateFunction(f) = unalias(e) {
            for arg in f
                .params
                .args
                .iter()
                .filter(|a| !matches!(a, Expr::Literal(..)))
            {
                // A DISTINCT aggregate covers the distinct values, not the rows.
                let covered = if f.params.distinct {
                    datafusion::functions_aggregate::count::count_distinct(arg.clone())
                } else {
                    datafusion::functions_aggregate::count::count(arg.clone())
                };
                aggr.push(covered.alias(format!("{GROUP_RECORDS}_{hidden}")));
                hidden += 1;
            }
        }
    }
    Ok((
        LogicalPlan::Aggregate(Aggregate::try_new(
            Arc::clone(&a.input),
            a.group_expr.clone(),
            aggr,
        )?),
        hidden,
    ))
}
