//! Numbers and times as a person reads them: `1,234,567`, `3 min ago`, `in 4 h`.

use weld_pipeline::Timestamp;

/// `n` with a comma between each group of three digits.
pub(super) fn number(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A span of milliseconds in the largest unit that keeps it a small number: `850 ms`, `12 s`,
/// `4 min`, `3 h`, `2 d`.
pub(super) fn span(millis: i64) -> String {
    let millis = millis.unsigned_abs();
    match millis {
        0..1_000 => format!("{millis} ms"),
        1_000..60_000 => format!("{} s", millis / 1_000),
        60_000..3_600_000 => format!("{} min", millis / 60_000),
        3_600_000..86_400_000 => format!("{} h", millis / 3_600_000),
        _ => format!("{} d", millis / 86_400_000),
    }
}

/// `at` relative to `now`: `12 s ago`, `in 4 min`, `now`.
pub(super) fn relative(at: Timestamp, now: Timestamp) -> String {
    let delta = at.as_millis().saturating_sub(now.as_millis());
    if delta.unsigned_abs() < 1_000 {
        "now".into()
    } else if delta < 0 {
        format!("{} ago", span(delta))
    } else {
        format!("in {}", span(delta))
    }
}

/// `at` as a person reads it, to the second, in UTC: `2026-12-02 01:02:03 UTC`.
pub(super) fn absolute(at: Timestamp) -> String {
    let text = at.to_string();
    // RFC 3339 with milliseconds: 2026-12-02T01:02:03.456Z.
    match (text.get(..10), text.get(11..19)) {
        (Some(day), Some(time)) if text.len() >= 20 && text.as_bytes()[10] == b'T' => {
            format!("{day} {time} UTC")
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_have_separators_every_three_digits() {
        assert_eq!(number(0), "0");
        assert_eq!(number(999), "999");
        assert_eq!(number(1_000), "1,000");
        assert_eq!(number(1_234_567), "1,234,567");
        assert_eq!(number(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn times_read_relative_and_absolute() {
        let now = Timestamp::from_millis(1_700_000_000_000);
        let at = |delta: i64| Timestamp::from_millis(1_700_000_000_000 + delta);
        assert_eq!(relative(at(-400), now), "now");
        assert_eq!(relative(at(-12_500), now), "12 s ago");
        assert_eq!(relative(at(4 * 60_000), now), "in 4 min");
        assert_eq!(relative(at(-3 * 3_600_000), now), "3 h ago");
        assert_eq!(relative(at(2 * 86_400_000), now), "in 2 d");
        assert_eq!(span(850), "850 ms");
        assert_eq!(absolute(now), "2023-11-14 22:13:20 UTC");
        // Times only a peer's bad data holds read as they are, never as a broken date.
        let far = Timestamp::from_millis(i64::MAX);
        assert_eq!(absolute(far), far.to_string());
        assert_eq!(
            relative(Timestamp::from_millis(i64::MIN), far),
            format!("{} ago", span(i64::MIN))
        );
    }
}
