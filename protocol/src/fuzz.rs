//! Property tests over every parser that sees bytes from outside: request bodies (reads, writes,
//! PartiQL, control-plane calls), canonical keys and numbers, and upstream answers. Each runs a
//! bounded number of cases in `cargo test`, so CI needs only stable Rust.
//!
//! Properties: no input makes a parser panic, whether random bytes or JSON built from DynamoDB's
//! own field names (which reaches deeper); and number canonicalisation keys two spellings alike
//! exactly when they are the same number.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::canonical::{encode_key, normalize_number, KeyAttr};
use super::{aliases, answers, partiql, reads, validate, writes, Operation};

const FIELDS: &[&str] = &[
    "TableName",
    "Key",
    "Item",
    "Items",
    "Keys",
    "RequestItems",
    "ProjectionExpression",
    "ExpressionAttributeNames",
    "ExpressionAttributeValues",
    "AttributesToGet",
    "ConsistentRead",
    "ReturnConsumedCapacity",
    "KeyConditionExpression",
    "FilterExpression",
    "IndexName",
    "Limit",
    "ExclusiveStartKey",
    "Select",
    "ScanIndexForward",
    "Segment",
    "TotalSegments",
    "Statement",
    "Statements",
    "TransactItems",
    "Put",
    "Update",
    "Delete",
    "ConditionCheck",
    "PutRequest",
    "DeleteRequest",
    "Responses",
    "UnprocessedKeys",
    "ConsumedCapacity",
    "Count",
    "ScannedCount",
    "LastEvaluatedKey",
    "Table",
    "TableDescription",
    "KeySchema",
    "AttributeName",
    "S",
    "N",
    "B",
    "SS",
    "NS",
    "BS",
    "M",
    "L",
    "NULL",
    "BOOL",
    "pk",
    "sk",
    "#n",
    ":v",
];

fn key_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FIELDS).prop_map(str::to_string),
        1 => "[a-zA-Z#:]{0,6}",
    ]
}

/// JSON values shaped like DynamoDB requests and answers, and like the ways they go wrong.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        number_spelling().prop_map(Value::String),
        "[ -~]{0,12}".prop_map(Value::String),
        prop::sample::select(FIELDS).prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key_name(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Objects whose top level uses request field names (what every operation takes).
fn json_object() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((key_name(), json_value()), 0..6)
        .prop_map(|kv| serde_json::to_vec(&Value::Object(kv.into_iter().collect())).unwrap())
}

fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => json_object(),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ]
}

/// Runs every parser of untrusted bytes over `body`; they may refuse it, never panic.
fn parse_everything(body: &[u8]) {
    let _ = reads::require_object(body);
    let _ = reads::parse_get_item(body);
    let _ = reads::parse_query(body, false);
    let _ = reads::parse_query(body, true);
    // The front door lets only JSON objects through (serde would read a struct from an array).
    let object = reads::require_object(body).is_ok();
    if let (true, Ok(reads::ReadParse::Cacheable(read))) =
        (object, reads::parse_batch_get_item(body))
    {
        for keep_every in 1..3 {
            let subset = reads::batch_get_subset(
                body,
                &read,
                |_, k| k.is_multiple_of(keep_every),
                |t| t == 0,
            )
            .expect("a parsed BatchGetItem can be cut down");
            serde_json::from_slice::<Value>(&subset).expect("the subset is JSON");
        }
    }
    let schema = |_: &super::table::TableId| None;
    let ctx = writes::WriteContext {
        region: "us-east-1",
        schema: &schema,
    };
    for op in Operation::ALL {
        let _ = writes::parse_write(*op, body, &ctx);
        let _ = writes::control_scope(*op, body, "us-east-1");
        let _ = partiql::parse_partiql(*op, body, "us-east-1");
        let _ = answers::has_answer_shape(*op, body);
        let _ = validate::cacheable_read(*op, body);
        // A rewritten body is JSON again whenever one was rewritten.
        if let Ok(Some(out)) = aliases::rewrite_request(*op, body, &mut EveryName) {
            serde_json::from_slice::<Value>(&out).expect("a rewritten request is JSON");
        }
        if let Some(out) = aliases::rewrite_answer(*op, body, &mut EveryName) {
            serde_json::from_slice::<Value>(&out).expect("a rewritten answer is JSON");
        }
    }
    let _ = answers::get_item_output(body);
    let _ = answers::without_consumed_capacity(body);
    let _ = answers::parse_batch_get_output(body);
    let _ = answers::describe_table_schema(body);
    let _ = answers::describe_table_replicas(body);
    if let Ok(raw) = serde_json::from_slice::<Box<serde_json::value::RawValue>>(body) {
        let _ = answers::item_key(&raw, &["pk".into(), "sk".into()]);
    }
    if let Ok(attrs) = serde_json::from_slice::<std::collections::HashMap<String, KeyAttr>>(body) {
        let _ = encode_key(attrs.iter().map(|(k, v)| (k.as_str(), v)));
    }
}

/// Renames every table name it is asked about, and every `a` in text.
struct EveryName;

impl aliases::Renames for EveryName {
    fn rename(&mut self, _: Option<&str>, name: &str) -> Option<String> {
        Some(format!("{name}-x\"\\"))
    }
    fn in_text(&self) -> Vec<(String, String)> {
        vec![("a".into(), "b\"".into())]
    }
}

/// A number as someone might write it: sign, digits with a point somewhere, an exponent.
fn number_spelling() -> impl Strategy<Value = String> {
    (canonical_number(), spelling()).prop_map(|(n, s)| spell(&n, &s))
}

/// A number in one form: sign, significant digits (no leading or trailing zeros), exponent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Number {
    negative: bool,
    digits: String,
    exponent: i128,
}

fn canonical_number() -> impl Strategy<Value = Number> {
    let exponent = prop_oneof![
        3 => -40i128..40,
        1 => (i64::MIN as i128 + 64)..(i64::MAX as i128 - 64),
        1 => prop_oneof![
            (i64::MIN as i128)..(i64::MIN as i128 + 64),
            (i64::MAX as i128 - 64)..=(i64::MAX as i128),
        ],
    ];
    (any::<bool>(), "[1-9]([0-9]{0,6}[1-9])?", exponent).prop_map(|(negative, digits, exponent)| {
        Number {
            negative,
            digits,
            exponent,
        }
    })
}

/// How to write a number: zeros added in front and behind, the point moved, a '+', 'E' or 'e'.
#[derive(Debug, Clone)]
struct Spelling {
    leading_zeros: usize,
    trailing_zeros: usize,
    point_from_end: usize,
    plus: bool,
    upper: bool,
}

fn spelling() -> impl Strategy<Value = Spelling> {
    (
        0usize..3,
        0usize..3,
        0usize..6,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(leading_zeros, trailing_zeros, point_from_end, plus, upper)| Spelling {
                leading_zeros,
                trailing_zeros,
                point_from_end,
                plus,
                upper,
            },
        )
}

/// Writes `n` as `s` says; the written exponent must fit an i64 (as DynamoDB's parser needs),
/// so a spelling that would push it out is adjusted back in by moving fewer digits.
fn spell(n: &Number, s: &Spelling) -> String {
    let mut mantissa = format!(
        "{}{}{}",
        "0".repeat(s.leading_zeros),
        n.digits,
        "0".repeat(s.trailing_zeros)
    );
    // value = digits × 10^exponent = mantissa × 10^(exponent - trailing zeros).
    let mut exponent = n.exponent - s.trailing_zeros as i128;
    let point = s.point_from_end.min(mantissa.len());
    exponent += point as i128;
    if exponent > i64::MAX as i128 || exponent < i64::MIN as i128 {
        // Fall back to the plain form, whose exponent is the canonical one.
        mantissa = n.digits.clone();
        exponent = n.exponent;
    } else if point > 0 {
        mantissa.insert(mantissa.len() - point, '.');
    }
    let sign = match (n.negative, s.plus) {
        (true, _) => "-",
        (false, true) => "+",
        (false, false) => "",
    };
    let e = if s.upper { 'E' } else { 'e' };
    format!("{sign}{mantissa}{e}{exponent}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic(body in any_body()) {
        parse_everything(&body);
    }

    #[test]
    fn spellings_of_one_number_share_a_key(n in canonical_number(), a in spelling(), b in spelling()) {
        let (x, y) = (spell(&n, &a), spell(&n, &b));
        let nx = normalize_number(&x);
        prop_assert!(nx.is_some(), "{} refused", x);
        prop_assert_eq!(nx, normalize_number(&y), "{} and {}", x, y);
    }

    #[test]
    fn different_numbers_have_different_keys(
        m in canonical_number(), n in canonical_number(), a in spelling(), b in spelling()
    ) {
        prop_assume!(m != n);
        let (x, y) = (spell(&m, &a), spell(&n, &b));
        prop_assert_ne!(normalize_number(&x), normalize_number(&y), "{} and {}", x, y);
    }

    #[test]
    fn a_number_one_digit_off_is_another_key(n in canonical_number(), a in spelling()) {
        // The neighbours that share the most with a number: its exponent ±1, near i64's ends too.
        for delta in [-1i128, 1] {
            let other = Number { exponent: n.exponent + delta, ..n.clone() };
            if other.exponent < i64::MIN as i128 || other.exponent > i64::MAX as i128 {
                continue;
            }
            prop_assert_ne!(normalize_number(&spell(&n, &a)), normalize_number(&spell(&other, &a)));
        }
    }
}

#[test]
fn numbers_that_once_shared_a_key_no_longer_do() {
    // 10 × 10^i64::MAX is 10^(i64::MAX + 1); the exponent arithmetic wrapped it onto 10^i64::MIN.
    let huge = normalize_number(&format!("10e{}", i64::MAX));
    let tiny = normalize_number(&format!("1e{}", i64::MIN));
    assert_ne!(huge, tiny);
}
