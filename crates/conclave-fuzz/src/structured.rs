//! `release-policy-structured`: libFuzzer's bytes become a well-formed release policy and a
//! claim set (through `arbitrary`), so the fuzzer spends its time in parsing rules and
//! evaluation, not in JSON syntax. Checked on every input:
//!
//! - a policy within the grammar's limits (depth ≤ `MAX_DEPTH`, no empty list, operator and
//!   value types that fit) parses, and one outside them is refused;
//! - the keys' ASCII case does not change what parses (`anyOf`, `ANYOF`, `AnyOf`);
//! - evaluation never panics, whatever the claims (long, non-ASCII, nested, absent);
//! - `equals v` and `notEquals v` never both hold, and on a present claim of `v`'s own JSON
//!   type exactly one does; a condition decides the same alone, inside a one-item `allOf` and
//!   inside a one-item `anyOf`.

use arbitrary::{Arbitrary, Unstructured};
use conclave_kms::policy::{MAX_DEPTH, ReleasePolicy};
use serde_json::{Map, Value, json};

const AUTHORITY: &str = "https://attest.example";

/// Claim paths the policies and claims draw from, so that they meet often.
const NAMES: [&str; 6] = [
    "x-ms-attestation-type",
    "x-ms-sevsnpvm-guestsvn",
    "x-ms-sevsnpvm-is-debuggable",
    "x-ms-isolation-tee.x-ms-compliance-status",
    "x-ms-runtime.keys",
    "x-ms-runtime.note",
];

#[derive(Arbitrary, Debug, Clone)]
enum Name {
    Known(u8),
    Other(String),
}

impl Name {
    fn path(&self) -> String {
        match self {
            Name::Known(i) => NAMES[*i as usize % NAMES.len()].to_string(),
            Name::Other(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Val {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A long string of one character after a short ASCII prefix: long and non-ASCII values
    /// (what truncation in messages meets) without needing hundreds of input bytes.
    Long {
        prefix: u8,
        c: char,
        n: u8,
    },
    Null,
    List(Vec<u8>),
}

impl Val {
    fn json(&self) -> Value {
        match self {
            Val::Bool(b) => json!(b),
            Val::Int(i) => json!(i),
            Val::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Val::Str(s) => json!(s),
            Val::Long { prefix, c, n } => {
                let mut s = "a".repeat(*prefix as usize % 4);
                s.extend(std::iter::repeat_n(*c, *n as usize));
                json!(s)
            }
            Val::Null => Value::Null,
            Val::List(v) => json!(v),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Op {
    Equals,
    NotEquals,
    Less,
    LessOrEquals,
    Greater,
    GreaterOrEquals,
    Exists,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Equals => "equals",
            Op::NotEquals => "notEquals",
            Op::Less => "less",
            Op::LessOrEquals => "lessOrEquals",
            Op::Greater => "greater",
            Op::GreaterOrEquals => "greaterOrEquals",
            Op::Exists => "exists",
        }
    }

    /// Whether the grammar accepts `value` for this operator.
    fn accepts(self, value: &Value) -> bool {
        match self {
            Op::Exists => {
                value.is_boolean()
                    || value.as_str().is_some_and(|s| {
                        s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false")
                    })
            }
            Op::Less | Op::LessOrEquals | Op::Greater | Op::GreaterOrEquals => {
                value.is_number()
                    || value
                        .as_str()
                        .and_then(|s| s.parse::<f64>().ok())
                        .is_some_and(f64::is_finite)
            }
            Op::Equals | Op::NotEquals => {
                value.is_string() || value.is_number() || value.is_boolean()
            }
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Node {
    AllOf(Vec<Node>),
    AnyOf(Vec<Node>),
    Claim { name: Name, op: Op, value: Val },
}

#[derive(Arbitrary, Debug)]
struct Case {
    top_any: bool,
    top: Vec<Node>,
    claims: Vec<(Name, Val)>,
    /// Which keys are written in upper case (bit i: the i-th key written).
    casing: u64,
}

struct Writer {
    casing: u64,
    n: u32,
}

impl Writer {
    fn key(&mut self, k: &str) -> String {
        let upper = self.casing >> (self.n % 64) & 1 == 1;
        self.n += 1;
        if upper {
            k.to_ascii_uppercase()
        } else {
            k.to_string()
        }
    }

    fn node(&mut self, n: &Node) -> Value {
        match n {
            Node::AllOf(items) => self.list("allOf", items),
            Node::AnyOf(items) => self.list("anyOf", items),
            Node::Claim { name, op, value } => {
                let mut m = Map::new();
                m.insert(self.key("claim"), json!(name.path()));
                m.insert(self.key(op.name()), value.json());
                Value::Object(m)
            }
        }
    }

    fn list(&mut self, key: &str, items: &[Node]) -> Value {
        let mut m = Map::new();
        let k = self.key(key);
        m.insert(
            k,
            Value::Array(items.iter().map(|i| self.node(i)).collect()),
        );
        Value::Object(m)
    }

    fn policy(&mut self, top_any: bool, top: &[Node]) -> Value {
        let mut block = Map::new();
        block.insert(self.key("authority"), json!(AUTHORITY));
        let list: Vec<Value> = top.iter().map(|n| self.node(n)).collect();
        block.insert(
            self.key(if top_any { "anyOf" } else { "allOf" }),
            Value::Array(list),
        );
        let mut m = Map::new();
        m.insert(self.key("version"), json!("1.0.0"));
        m.insert(self.key("anyOf"), json!([Value::Object(block)]));
        Value::Object(m)
    }
}

/// Whether a list of conditions at `depth` is within the grammar (the top list is depth 1).
fn well_formed(items: &[Node], depth: usize) -> bool {
    depth <= MAX_DEPTH
        && !items.is_empty()
        && items.iter().all(|n| match n {
            Node::AllOf(c) | Node::AnyOf(c) => well_formed(c, depth + 1),
            Node::Claim { op, value, .. } => op.accepts(&value.json()),
        })
}

/// Puts `value` at the dot-path `path` in `claims`, making objects on the way.
fn insert(claims: &mut Value, path: &str, value: Value) {
    let mut at = claims;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let obj = at.as_object_mut().expect("an object");
        if i + 1 == parts.len() {
            obj.insert(part.to_string(), value);
            return;
        }
        at = obj.entry(part.to_string()).or_insert_with(|| json!({}));
    }
}

fn single(op: Op, name: &str, value: &Value, wrap: Option<&str>) -> ReleasePolicy {
    let leaf = json!({"claim": name, op.name(): value});
    let cond = match wrap {
        Some(w) => json!({ w: [leaf] }),
        None => leaf,
    };
    ReleasePolicy::from_value(&json!({"version": "1.0.0",
        "anyOf": [{"authority": AUTHORITY, "allOf": [cond]}]}))
    .expect("a one-condition policy within the grammar parses")
}

fn leaves(nodes: &[Node], out: &mut Vec<(String, Op, Value)>) {
    for n in nodes {
        match n {
            Node::AllOf(c) | Node::AnyOf(c) => leaves(c, out),
            Node::Claim { name, op, value } => out.push((name.path(), *op, value.json())),
        }
    }
}

/// The harness (see the module documentation).
pub fn run(input: &[u8]) {
    let Ok(case) = Case::arbitrary_take_rest(Unstructured::new(input)) else {
        return;
    };
    let mut claims = json!({});
    for (name, value) in &case.claims {
        insert(&mut claims, &name.path(), value.json());
    }
    let doc = Writer {
        casing: case.casing,
        n: 0,
    }
    .policy(case.top_any, &case.top);
    let lower = Writer { casing: 0, n: 0 }.policy(case.top_any, &case.top);
    let parsed = ReleasePolicy::from_value(&doc);
    assert_eq!(
        parsed.is_ok(),
        ReleasePolicy::from_value(&lower).is_ok(),
        "the keys' case changed whether {doc} parses"
    );
    let expect_ok = well_formed(&case.top, 1);
    match &parsed {
        Ok(p) => {
            assert!(expect_ok, "a policy outside the grammar parsed: {doc}");
            let _ = p.evaluate(AUTHORITY, &claims);
            let _ = p.evaluate("https://other.example", &claims);
        }
        Err(e) => assert!(
            !expect_ok,
            "a policy within the grammar was refused ({e}): {doc}"
        ),
    }
    let mut all = Vec::new();
    leaves(&case.top, &mut all);
    for (name, op, value) in all.iter().take(8) {
        if !op.accepts(value) || name.split('.').any(str::is_empty) {
            continue;
        }
        let alone = single(*op, name, value, None).evaluate(AUTHORITY, &claims);
        for wrap in ["allOf", "anyOf"] {
            let wrapped = single(*op, name, value, Some(wrap)).evaluate(AUTHORITY, &claims);
            assert_eq!(
                alone.is_ok(),
                wrapped.is_ok(),
                "{name} {} {value} decides differently inside a one-item {wrap}",
                op.name()
            );
        }
        if matches!(op, Op::Equals | Op::NotEquals) {
            let eq = single(Op::Equals, name, value, None).evaluate(AUTHORITY, &claims);
            let ne = single(Op::NotEquals, name, value, None).evaluate(AUTHORITY, &claims);
            // Never both; and for a present claim of the value's own JSON type, exactly one.
            assert!(
                !(eq.is_ok() && ne.is_ok()),
                "equals and notEquals {value} both hold on claim {name}"
            );
            let same_type = conclave_kms::policy::claim_at(&claims, name).is_some_and(|c| {
                (c.is_string() && value.is_string())
                    || (c.is_boolean() && value.is_boolean())
                    || (c.is_number() && value.is_number())
            });
            if same_type {
                assert!(
                    eq.is_ok() || ne.is_ok(),
                    "neither equals nor notEquals {value} holds on claim {name} of its type"
                );
            }
        }
    }
}

/// Seeds: byte strings that `arbitrary` turns into small policies of each shape.
pub fn seeds() -> Vec<Vec<u8>> {
    vec![
        vec![0; 64],
        (0u8..=255).collect(),
        b"\x01\x02\x00\x02\x01\x00\x03x-ms-runtime.note\x03\x07caf\xc3\xa9\xc3\xa9\xc3\xa9"
            .to_vec(),
        [7u8, 1, 2, 3, 4, 5, 6, 0, 1, 2, 0, 3, 1, 4, 2, 0].repeat(8),
    ]
}
