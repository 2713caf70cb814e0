//! Canonical encodings: equal DynamoDB values give equal bytes.
//!
//! Numbers are normalized (`1`, `1.0`, `1E0` and `10E-1` are one number), binary values are
//! compared by their decoded bytes, and map order never matters. These encodings are cache keys:
//! a PutItem that spells a key one way must hit the entry a GetItem spelled another way.

use std::borrow::{Borrow, Cow};

use base64::Engine as _;
use serde::Deserialize;
use smallvec::SmallVec;

use super::projection::{self, Step};

/// A key attribute value as it appears in `Key`, `Item` or `ExclusiveStartKey`: only S, N and B
/// can be key attributes. Borrowed from the request body unless JSON escapes forced a copy.
#[derive(Debug, Deserialize)]
pub struct KeyAttr<'a> {
    #[serde(rename = "S", borrow)]
    s: Option<Cow<'a, str>>,
    #[serde(rename = "N", borrow)]
    n: Option<Cow<'a, str>>,
    #[serde(rename = "B", borrow)]
    b: Option<Cow<'a, str>>,
}

impl<'a> KeyAttr<'a> {
    /// A key value given by its type member (`S`, `N` or `B`) and that member's string, as
    /// read from JSON without escapes. `None` for any other type.
    pub fn new(tag: &str, value: &'a str) -> Option<KeyAttr<'a>> {
        let value = Some(Cow::Borrowed(value));
        let (s, n, b) = match tag {
            "S" => (value, None, None),
            "N" => (None, value, None),
            "B" => (None, None, value),
            _ => return None,
        };
        Some(KeyAttr { s, n, b })
    }

    /// The length of the value as written: about what its encoding takes (a normalized number
    /// is rarely longer, a decoded binary is shorter).
    fn text_len(&self) -> usize {
        [&self.s, &self.n, &self.b]
            .iter()
            .map(|v| v.as_deref().map_or(0, str::len))
            .sum()
    }

    /// Appends the canonical encoding of this value; `None` if it is not a valid key value (or
    /// does not fit `out`).
    fn encode_into(&self, out: &mut impl KeyBuf) -> Option<()> {
        match (&self.s, &self.n, &self.b) {
            (Some(s), None, None) => push_field(out, b'S', s.as_bytes()),
            (None, Some(n), None) => push_field(out, b'N', normalize_number(n)?.as_bytes()),
            (None, None, Some(b)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .ok()?;
                push_field(out, b'B', &bytes)
            }
            _ => None,
        }
    }
}

fn push_field(out: &mut impl KeyBuf, tag: u8, bytes: &[u8]) -> Option<()> {
    out.put(&[tag])?;
    out.put(&(bytes.len() as u32).to_le_bytes())?;
    out.put(bytes)
}

/// Where a canonical key is written: a `Vec`, or a buffer on the stack that may be too short.
trait KeyBuf {
    fn put(&mut self, bytes: &[u8]) -> Option<()>;
}

impl KeyBuf for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        self.extend_from_slice(bytes);
        Some(())
    }
}

/// A canonical key inline up to 64 bytes (a usual GetItem's two attributes take about 40).
pub type InlineKey = SmallVec<[u8; 64]>;

/// An [`InlineKey`] as it is written on the stack.
struct Stack {
    bytes: [u8; 64],
    len: usize,
}

impl KeyBuf for Stack {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len + bytes.len();
        self.bytes.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }
}

/// Canonical bytes of a primary key given as `(attribute name, value)` pairs in any order.
/// `None` when a value is not a valid key value (the request then goes upstream uncached, and
/// DynamoDB says what is wrong).
pub fn encode_key<'a, 'b: 'a, I>(attrs: I) -> Option<Vec<u8>>
where
    I: IntoIterator<Item = (&'a str, &'a KeyAttr<'b>)>,
{
    // A key has one or two attributes: no allocation but the encoding's, made at its size.
    let mut pairs: smallvec::SmallVec<[(&str, &KeyAttr); 2]> = attrs.into_iter().collect();
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    encode_sorted_key(&pairs)
}

/// [`encode_key`] of attributes already sorted by name (a caller with two attributes sorts them
/// with one comparison).
pub fn encode_sorted_key<'b, V: Borrow<KeyAttr<'b>>>(pairs: &[(&str, V)]) -> Option<Vec<u8>> {
    if pairs.is_empty() {
        return None;
    }
    debug_assert!(pairs.windows(2).all(|w| w[0].0 <= w[1].0));
    let size = pairs
        .iter()
        .map(|(name, value)| 10 + name.len() + value.borrow().text_len())
        .sum();
    let mut out = Vec::with_capacity(size);
    encode_pairs(pairs, &mut out)?;
    Some(out)
}

/// [`encode_sorted_key`] inline, with no allocation when it fits an [`InlineKey`] (every
/// GetItem's key is encoded on its way to a hit).
pub fn encode_sorted_key_inline<'b, V: Borrow<KeyAttr<'b>>>(
    pairs: &[(&str, V)],
) -> Option<InlineKey> {
    if pairs.is_empty() {
        return None;
    }
    let mut stack = Stack {
        bytes: [0; 64],
        len: 0,
    };
    match encode_pairs(pairs, &mut stack) {
        Some(()) => Some(SmallVec::from_buf_and_len(stack.bytes, stack.len)),
        // Too long for the stack, or not a key: the `Vec` says which.
        None => encode_sorted_key(pairs).map(SmallVec::from_vec),
    }
}

fn encode_pairs<'b, V: Borrow<KeyAttr<'b>>>(
    pairs: &[(&str, V)],
    out: &mut impl KeyBuf,
) -> Option<()> {
    for (name, value) in pairs {
        push_field(out, b'A', name.as_bytes())?;
        value.borrow().encode_into(out)?;
    }
    Some(())
}

/// Normalizes a DynamoDB number: `-0012.50E+1` → `-125e-1`, every zero → `0`.
/// `None` if the string is not a number DynamoDB would accept.
pub fn normalize_number(s: &str) -> Option<String> {
    let s = s.trim();
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let digits: String = [int, frac].concat();
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return Some("0".into());
    }
    let trimmed = significant.trim_end_matches('0');
    // In i128: an exponent near i64's ends plus the digit counts must not wrap, or two different
    // numbers would share a key. Every i64 exponent and body length fits.
    let trailing = (significant.len() - trimmed.len()) as i128;
    let exp = exponent as i128 - frac.len() as i128 + trailing;
    let sign = if negative { "-" } else { "" };
    Some(format!("{sign}{trimmed}e{exp}"))
}

/// Rewrites every `{"N": ...}` and `{"NS": [...]}` inside a JSON tree to normalized numbers, so
/// two requests that differ only in how they spell numbers become the same request.
pub fn normalize_numbers_in(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            if map.len() == 1 {
                if let Some(Value::String(n)) = map.get_mut("N") {
                    if let Some(norm) = normalize_number(n) {
                        *n = norm;
                    }
                    return;
                }
                if let Some(Value::Array(ns)) = map.get_mut("NS") {
                    for n in ns.iter_mut() {
                        if let Value::String(s) = n {
                            if let Some(norm) = normalize_number(s) {
                                *s = norm;
                            }
                        }
                    }
                    ns.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                    return;
                }
            }
            for v in map.values_mut() {
                normalize_numbers_in(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_numbers_in),
        _ => {}
    }
}

/// The canonical form of what a read returns: ProjectionExpression with ExpressionAttributeNames
/// resolved, or AttributesToGet. Paths are sorted (the order of a projection does not change the
/// answer). `None` if the projection does not parse ([`projection`]: the grammar the validator
/// checks) or references a name that is not defined.
pub fn encode_projection(
    expression: Option<&str>,
    names: Option<&std::collections::HashMap<String, String>>,
    attributes_to_get: Option<&[String]>,
) -> Option<Vec<u8>> {
    let mut paths: Vec<Vec<u8>> = Vec::new();
    if let Some(expr) = expression {
        let resolve = |placeholder: &str| names?.get(placeholder).map(String::as_str);
        for path in projection::parse(expr, resolve).ok()? {
            let mut encoded = Vec::new();
            for step in path {
                match step {
                    Step::Name(name) => push_field(&mut encoded, b'.', name.as_bytes())?,
                    Step::Index(i) => push_field(&mut encoded, b'[', i.to_string().as_bytes())?,
                }
            }
            paths.push(encoded);
        }
    }
    if let Some(attrs) = attributes_to_get {
        for a in attrs {
            let mut encoded = Vec::new();
            push_field(&mut encoded, b'.', a.as_bytes())?;
            paths.push(encoded);
        }
    }
    paths.sort_unstable();
    Some(paths.concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attr(json: &str) -> KeyAttr<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_key_encoded_inline_is_the_key_encoded_in_a_vec() {
        for (name, tag, value) in [
            ("pk", "S", "p0000000123".to_string()),
            ("pk", "N", "0012.50".to_string()),
            ("pk", "B", "AAE=".to_string()),
            // Longer than the stack holds: the same bytes, from the heap.
            ("pk", "S", "v".repeat(100)),
        ] {
            let attr = KeyAttr::new(tag, &value).unwrap();
            let other = KeyAttr::new("S", "s1").unwrap();
            let pairs = [(name, &attr), ("sk", &other)];
            let inline = encode_sorted_key_inline(&pairs).unwrap();
            assert_eq!(&inline[..], &encode_sorted_key(&pairs).unwrap()[..]);
            assert_eq!(inline.spilled(), value.len() > 40, "{value}");
        }
        let bad = KeyAttr::new("N", "x").unwrap();
        assert_eq!(encode_sorted_key_inline(&[("pk", &bad)]), None);
    }

    #[test]
    fn equal_numbers_normalize_equal() {
        let forms = ["1", "1.0", "1E0", "10E-1", "0.1e1", "+1", "001.000"];
        let norms: Vec<_> = forms.iter().map(|f| normalize_number(f).unwrap()).collect();
        assert!(norms.iter().all(|n| n == &norms[0]), "{norms:?}");
        assert_ne!(
            normalize_number("1").unwrap(),
            normalize_number("-1").unwrap()
        );
        assert_ne!(
            normalize_number("10").unwrap(),
            normalize_number("1").unwrap()
        );
        assert_eq!(normalize_number("0.000").unwrap(), "0");
        assert_eq!(normalize_number("-0").unwrap(), "0");
        assert_eq!(normalize_number("1e400").unwrap(), "1e400");
    }

    #[test]
    fn exponents_at_the_ends_of_the_range_do_not_wrap() {
        let max = i64::MAX;
        let huge = normalize_number(&format!("10e{max}")).unwrap();
        let tiny = normalize_number(&format!("1e{}", i64::MIN)).unwrap();
        assert_ne!(huge, tiny);
        assert_eq!(huge, format!("1e{}", max as i128 + 1));
        assert_ne!(
            normalize_number(&format!("0.1e{}", i64::MIN)),
            normalize_number(&format!("1e{max}"))
        );
    }

    #[test]
    fn non_numbers_are_refused() {
        for bad in ["", "-", ".", "1.2.3", "abc", "1e", "1e1.5", "0x10"] {
            assert_eq!(normalize_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn key_encoding_ignores_attribute_order_and_number_spelling() {
        let (a1, b1) = (attr(r#"{"S":"x"}"#), attr(r#"{"N":"1.0"}"#));
        let (a2, b2) = (attr(r#"{"S":"x"}"#), attr(r#"{"N":"1"}"#));
        let k1 = encode_key([("pk", &a1), ("sk", &b1)]).unwrap();
        let k2 = encode_key([("sk", &b2), ("pk", &a2)]).unwrap();
        assert_eq!(k1, k2);
        let other = attr(r#"{"N":"2"}"#);
        assert_ne!(k1, encode_key([("pk", &a1), ("sk", &other)]).unwrap());
    }

    #[test]
    fn binary_keys_compare_by_bytes_and_types_are_distinct() {
        let b = attr(r#"{"B":"AAE="}"#);
        let s = attr(r#"{"S":"AAE="}"#);
        assert_ne!(
            encode_key([("k", &b)]).unwrap(),
            encode_key([("k", &s)]).unwrap()
        );
        assert_eq!(encode_key([("k", &attr(r#"{"B":"not base64!"}"#))]), None);
        assert_eq!(encode_key([("k", &attr(r#"{"BOOL":true}"#))]), None);
    }

    #[test]
    fn projection_resolves_names_and_ignores_order() {
        let names: std::collections::HashMap<String, String> =
            [("#n".to_string(), "name".to_string())].into();
        let a = encode_projection(Some("#n, price"), Some(&names), None).unwrap();
        let b = encode_projection(Some("price ,#n"), Some(&names), None).unwrap();
        let c = encode_projection(None, None, Some(&["name".into(), "price".into()])).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_ne!(
            a,
            encode_projection(Some("#n"), Some(&names), None).unwrap()
        );
        assert_eq!(encode_projection(Some("#missing"), None, None), None);
        assert_ne!(
            encode_projection(Some("a.b"), None, None),
            encode_projection(Some("a[1]"), None, None)
        );
        // One grammar with the validator: blanks and index spellings do not make two keys, and
        // what the validator refuses (a bare reserved word, a stray comma) is not keyed at all.
        assert_eq!(
            encode_projection(Some("a [ 01 ] . b"), None, None),
            encode_projection(Some("a[1].b"), None, None)
        );
        assert_eq!(encode_projection(Some("name"), None, None), None);
        assert_eq!(encode_projection(Some("a,"), None, None), None);
    }

    #[test]
    fn numbers_inside_requests_normalize() {
        let mut a: serde_json::Value =
            serde_json::from_str(r#"{":v":{"N":"1.50"},"l":{"L":[{"N":"2E0"}]}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{":v":{"N":"15e-1"},"l":{"L":[{"N":"2"}]}}"#).unwrap();
        let mut b2 = b.clone();
        normalize_numbers_in(&mut a);
        normalize_numbers_in(&mut b2);
        assert_eq!(a, b2);
    }

    proptest! {
        #[test]
        fn scaling_spellings_agree(mantissa in 1u64..1_000_000, shift in 0i64..6) {
            // m × 10^0 written plainly, and as (m × 10^shift) × 10^-shift.
            let plain = mantissa.to_string();
            let scaled = format!("{}e-{}", mantissa * 10u64.pow(shift as u32), shift);
            prop_assert_eq!(normalize_number(&plain), normalize_number(&scaled));
        }

        #[test]
        fn distinct_integers_stay_distinct(a in 0u64..1_000_000, b in 0u64..1_000_000) {
            prop_assume!(a != b);
            prop_assert_ne!(normalize_number(&a.to_string()), normalize_number(&b.to_string()));
        }
    }
}
