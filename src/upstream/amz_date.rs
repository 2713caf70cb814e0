//! The `X-Amz-Date` timestamp of SigV4 requests (`20200101T000000Z`, UTC), written and read in
//! one place for whatever builds or checks signed requests outside `aws-sigv4` (which keeps its
//! own private copy): the load generator's unsigned requests and the tests that recompute a
//! signature. The calendar arithmetic is the `time` crate's.

use std::time::SystemTime;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// `t` as an `X-Amz-Date` value.
pub fn format(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// An `X-Amz-Date` value as a time; `None` if it is not one.
pub fn parse(stamp: &str) -> Option<SystemTime> {
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = stamp.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if stamp.len() != 16 || &stamp[8..9] != "T" || &stamp[15..] != "Z" {
        return None;
    }
    let date = Date::from_calendar_date(
        i32::try_from(digits(0..4)?).ok()?,
        Month::try_from(u8::try_from(digits(4..6)?).ok()?).ok()?,
        u8::try_from(digits(6..8)?).ok()?,
    )
    .ok()?;
    let time = Time::from_hms(
        u8::try_from(digits(9..11)?).ok()?,
        u8::try_from(digits(11..13)?).ok()?,
        u8::try_from(digits(13..15)?).ok()?,
    )
    .ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(format(t), "20231114T221320Z");
        assert_eq!(format(SystemTime::UNIX_EPOCH), "19700101T000000Z");
    }

    #[test]
    fn parses_what_it_formats() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_164_799); // 2024-02-28T23:59:59Z
        assert_eq!(parse(&format(t)), Some(t));
        assert_eq!(
            parse("20240229T120000Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_208_000))
        );
    }

    #[test]
    fn rejects_what_is_not_a_stamp() {
        for bad in [
            "",
            "20231114T221320",
            "20231314T221320Z",
            "2023111XT221320Z",
            "20231114 221320Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
