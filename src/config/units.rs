//! Durations and sizes: how a config file writes them (`"250ms"`, `"5m"`, `"256MiB"`), how
//! `check-config` prints them (the same way), and how `check-config --json` gives them to programs
//! (seconds and bytes).
//!
//! A field states its unit once, with `#[serde(with = "units::duration")]` (or `opt_duration`,
//! `size`, and `positive_duration` / `opt_positive_duration` / `positive_size` for what must be
//! more than zero), and keeps its plain type (`Duration`, `u64`), so the code that uses it reads a
//! `Duration`. Which form a value takes is chosen by the rendering around it ([`in_numbers`] for
//! JSON, [`checking`] for validation, words otherwise), not key by key: a new field of one of
//! these units is rendered in seconds or bytes and checked for zero by its attribute alone.

use std::cell::Cell;
use std::time::Duration;

use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

/// `5m`, `30s`, `1h 30m`, `250ms`, `0s`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v)
        .map_err(|e| format!("`{v}` is not a duration like 30s or 5m ({e})"))
}

/// `256MiB`, `1GiB`, `64MB`, `1048576` (bytes).
pub fn parse_size(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("`{v}` is not a size like 256MiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{v}` (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    Ok((num * mult as f64) as u64)
}

/// A size in the largest binary unit that divides it: `256MiB`, `1536B`.
fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, mult) in UNITS {
        if bytes >= mult && bytes.is_multiple_of(mult) {
            return format!("{}{unit}", bytes / mult);
        }
    }
    format!("{bytes}B")
}

/// What a duration or size serializes as, for the length of one rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// As a config file writes it: `"5m"`, `"256MiB"` (TOML, `check-config`).
    Words,
    /// Seconds (a float) and bytes (an integer): `check-config --json`.
    Numbers,
    /// As `Words`, but a zero in a field that must be positive fails the serialization with the
    /// message validation gives.
    Check,
}

thread_local! {
    // Serialization runs start to end on the thread that asked for it, so the form set around it
    // is the one its fields see.
    static FORM: Cell<Form> = const { Cell::new(Form::Words) };
}

/// Runs `render` with durations and sizes in `form`; the form before is restored afterwards,
/// even if `render` panics.
fn with_form<T>(form: Form, render: impl FnOnce() -> T) -> T {
    struct Restore(Form);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORM.with(|f| f.set(self.0));
        }
    }
    let _restore = Restore(FORM.with(|f| f.replace(form)));
    render()
}

/// Runs `render` (a serialization) with durations in seconds and sizes in bytes.
pub(super) fn in_numbers<T>(render: impl FnOnce() -> T) -> T {
    with_form(Form::Numbers, render)
}

/// Runs `render` (a serialization) so that it fails at the first field that must be positive and
/// is zero.
pub(super) fn checking<T>(render: impl FnOnce() -> T) -> T {
    with_form(Form::Check, render)
}

fn serialize_duration<S: Serializer>(d: Duration, positive: bool, s: S) -> Result<S::Ok, S::Error> {
    match FORM.with(Cell::get) {
        Form::Numbers => s.serialize_f64(d.as_secs_f64()),
        Form::Check if positive && d.is_zero() => Err(S::Error::custom("must be greater than 0s")),
        Form::Words | Form::Check => s.serialize_str(&humantime::format_duration(d).to_string()),
    }
}

fn serialize_size<S: Serializer>(bytes: u64, positive: bool, s: S) -> Result<S::Ok, S::Error> {
    match FORM.with(Cell::get) {
        Form::Numbers => s.serialize_u64(bytes),
        Form::Check if positive && bytes == 0 => Err(S::Error::custom("must be greater than 0")),
        Form::Words | Form::Check => s.serialize_str(&format_size(bytes)),
    }
}

/// A duration, written `"30s"`.
pub(super) mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        serialize_duration(*d, false, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// A duration that must be more than zero (a timeout, an interval): validation refuses `"0s"`.
pub(super) mod positive_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        serialize_duration(*d, true, s)
    }

    pub use super::duration::deserialize;
}

/// A duration that may be absent (its key then left out when printed).
pub(super) mod opt_duration {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => serialize_duration(*d, false, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// A duration that may be absent, and must be more than zero when present.
pub(super) mod opt_positive_duration {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => serialize_duration(*d, true, s),
            None => s.serialize_none(),
        }
    }

    pub use super::opt_duration::deserialize;
}

/// A size: a number of bytes, or a string with a unit (`"256MiB"`).
pub(super) mod size {
    use super::*;

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        serialize_size(*v, false, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(n),
            Raw::Str(s) => parse_size(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// A size that must be more than zero: validation refuses `0`.
pub(super) mod positive_size {
    use super::*;

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        serialize_size(*v, true, s)
    }

    pub use super::size::deserialize;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert_eq!(format_size(256 << 20), "256MiB");
        assert_eq!(format_size(1536), "1536B");
    }

    #[test]
    fn the_form_is_restored_after_a_rendering_even_one_that_panics() {
        let render = || {
            serialize_duration(
                Duration::from_secs(90),
                false,
                serde_json::value::Serializer,
            )
            .unwrap()
        };
        assert_eq!(in_numbers(render), 90.0);
        assert_eq!(render(), "1m 30s");
        let panicked = std::panic::catch_unwind(|| in_numbers(|| panic!("mid-rendering")));
        assert!(panicked.is_err());
        assert_eq!(render(), "1m 30s");
    }
}
