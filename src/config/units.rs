//! Durations and sizes in the configuration: strings that carry their unit (`"2s"`, `"64 MiB"`).
//! A bare number is refused, whatever the key, because its unit would be a guess: `settle = 2`
//! could mean seconds or milliseconds, `max_bytes = 1024` bytes or KiB.
//!
//! A refused bare number carries the value the reader probably meant, behind [`NEEDS_UNIT`],
//! so that the error message can show the whole line to write (`settle = "2s"`), key included,
//! which only the caller knows.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// Starts the message of a refused bare number: `NEEDS_UNIT`, the kind ("duration" or "size"),
/// [`SEP`], the suggested value. [`super::describe_figment`] turns it into a sentence.
pub(super) const NEEDS_UNIT: &str = "\u{1}needs-unit\u{1}";
pub(super) const SEP: char = '\u{1}';

/// Examples shown when a value cannot be read.
const DURATION_FORMS: &str = "\"500ms\", \"2s\", \"1m\" or \"2m 30s\"";
const SIZE_FORMS: &str = "\"512 KiB\", \"64 MiB\" or \"1 GiB\"";

/// `#[serde(deserialize_with)]` for an optional duration.
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_any(DurationVisitor).map(Some)
}

/// `#[serde(deserialize_with)]` for an optional size in bytes.
pub(super) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(SizeVisitor).map(Some)
}

fn needs_unit<E: de::Error>(kind: &str, suggestion: &str) -> E {
    E::custom(format!("{NEEDS_UNIT}{kind}{SEP}{suggestion}"))
}

/// What a bare number of seconds should have been written as.
fn seconds_suggestion(secs: f64) -> String {
    if secs.fract() == 0.0 && secs >= 0.0 {
        format!("{secs}s")
    } else {
        // humantime takes no fractions: "0.5" is "500ms".
        format!("{}ms", (secs * 1000.0).round().max(0.0))
    }
}

/// What a bare number of bytes should have been written as: the largest binary unit that
/// divides it, so `1073741824` becomes `"1 GiB"`.
fn bytes_suggestion(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (factor, unit) in UNITS {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{} {unit}", bytes / factor);
        }
    }
    format!("{bytes} B")
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a duration with its unit, such as {DURATION_FORMS}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        let t = v.trim();
        if let Ok(n) = t.parse::<f64>() {
            return Err(needs_unit("duration", &seconds_suggestion(n)));
        }
        humantime::parse_duration(t).map_err(|_| {
            E::custom(format!(
                "{v:?} is not a duration; write it like {DURATION_FORMS}"
            ))
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(needs_unit("duration", &seconds_suggestion(v as f64)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(needs_unit("duration", &seconds_suggestion(v as f64)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(needs_unit("duration", &seconds_suggestion(v)))
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a size with its unit, such as {SIZE_FORMS}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        let t = v.trim();
        if let Ok(n) = t.parse::<u64>() {
            return Err(needs_unit("size", &bytes_suggestion(n)));
        }
        let not_a_size = || E::custom(format!("{v:?} is not a size; write it like {SIZE_FORMS}"));
        // A number, then a unit made of letters: bytesize alone would also take "1024".
        let unit = t.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
        if unit.len() == t.len() || !unit.trim_start().chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(not_a_size());
        }
        t.parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| not_a_size())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        Err(needs_unit("size", &bytes_suggestion(v.max(0) as u64)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Err(needs_unit("size", &bytes_suggestion(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        Err(needs_unit("size", &bytes_suggestion(v.max(0.0) as u64)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(s: &str) -> Result<Duration, String> {
        DurationVisitor
            .visit_str::<de::value::Error>(s)
            .map_err(|e| e.to_string())
    }

    fn size(s: &str) -> Result<u64, String> {
        SizeVisitor
            .visit_str::<de::value::Error>(s)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn durations_need_their_unit() {
        assert_eq!(dur("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(dur("2m 30s"), Ok(Duration::from_secs(150)));
        assert_eq!(dur("500ms"), Ok(Duration::from_millis(500)));
        let bare = dur("2").unwrap_err();
        assert_eq!(bare, format!("{NEEDS_UNIT}duration{SEP}2s"));
        let e = DurationVisitor
            .visit_f64::<de::value::Error>(0.5)
            .unwrap_err();
        assert!(e.to_string().ends_with("500ms"), "{e}");
        let e = dur("soon").unwrap_err();
        assert!(
            e.contains("\"soon\" is not a duration") && e.contains("\"2s\""),
            "{e}"
        );
    }

    #[test]
    fn sizes_need_their_unit() {
        assert_eq!(size("64 MiB"), Ok(64 << 20));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        assert_eq!(size("1 GB"), Ok(1_000_000_000));
        assert_eq!(size("100 B"), Ok(100));
        assert_eq!(
            SizeVisitor
                .visit_u64::<de::value::Error>(1_073_741_824)
                .unwrap_err()
                .to_string(),
            format!("{NEEDS_UNIT}size{SEP}1 GiB")
        );
        assert!(size("1024").unwrap_err().ends_with("1 KiB"));
        assert!(size("1000").unwrap_err().ends_with("1000 B"));
        assert!(size("lots").unwrap_err().contains("\"lots\" is not a size"));
        assert!(size("12 parsecs").unwrap_err().contains("is not a size"));
        // Every suggestion is itself accepted.
        for n in [1u64, 1000, 1024, 5 << 20, 3 << 30, 7 << 40] {
            assert_eq!(size(&bytes_suggestion(n)), Ok(n), "{n}");
        }
    }
}
