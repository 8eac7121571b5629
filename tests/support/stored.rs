//! The stored set against the source's.

use super::*;

/// The fake's records by id, split as the API lists them: live and archived.
#[derive(Clone, Debug, Default)]
pub(crate) struct SourceSet {
    pub(crate) live: BTreeMap<String, Value>,
    pub(crate) archived: BTreeMap<String, Value>,
}

impl SourceSet {
    /// From the fake's dump.
    pub(crate) fn from_dump(dump: Vec<Value>) -> SourceSet {
        let mut set = SourceSet::default();
        for record in dump {
            let id = record["id"]
                .as_str()
                .unwrap_or_else(|| panic!("a dumped record without an id: {record}"))
                .to_string();
            let archived = record["archived"]
                .as_bool()
                .unwrap_or_else(|| panic!("a dumped record without archived: {record}"));
            let side = if archived {
                &mut set.archived
            } else {
                &mut set.live
            };
            side.insert(id, record);
        }
        set
    }
}

/// How the stream's stored set differs from `expected`, or `Ok` when it is the same, exactly:
/// each live id of the source once in the live listing, each archived one once in the archived
/// listing, with the source's `updatedAt` and property values, nothing else, and the status's
/// counts agreeing.
pub(crate) async fn stored_diff(
    api: &Api,
    stream: &str,
    expected: &SourceSet,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let live = api.all_records(stream, false).await;
    compare("live", &live, &expected.live, false, &mut problems);
    let archived = api.all_records(stream, true).await;
    compare(
        "archived",
        &archived,
        &expected.archived,
        true,
        &mut problems,
    );
    let status = api.status(stream).await;
    for (field, want) in [
        ("records", expected.live.len()),
        ("archived", expected.archived.len()),
    ] {
        if status[field].as_u64() != Some(want as u64) {
            problems.push(format!(
                "status.{field} is {}, the source has {want}",
                status[field]
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 10;
    let more = problems.len().saturating_sub(SHOWN);
    problems.truncate(SHOWN);
    if more > 0 {
        problems.push(format!("... and {more} more"));
    }
    Err(problems.join("\n  "))
}

fn compare(
    listing: &str,
    stored: &[Value],
    expected: &BTreeMap<String, Value>,
    archived: bool,
    problems: &mut Vec<String>,
) {
    let mut seen = BTreeSet::new();
    for record in stored {
        let id = record["id"].as_str().unwrap_or_default();
        seen.insert(id);
        let Some(want) = expected.get(id) else {
            problems.push(format!(
                "{listing}: record {id} is not in the source's {listing} set"
            ));
            continue;
        };
        if record["archived"].as_bool() != Some(archived) {
            problems.push(format!(
                "{listing}: record {id} has archived {}",
                record["archived"]
            ));
        }
        if record["data"]["id"].as_str() != Some(id) {
            problems.push(format!(
                "{listing}: record {id} has data.id {}",
                record["data"]["id"]
            ));
        }
        // Instants, not strings: the API may write the same time differently than HubSpot.
        let want_at = want["updatedAt"].as_str().and_then(rfc3339_millis);
        let stored_at = record["updated_at"].as_str().and_then(rfc3339_millis);
        let data_at = record["data"]["updatedAt"]
            .as_str()
            .and_then(rfc3339_millis);
        if want_at.is_none() || stored_at != want_at || data_at != want_at {
            problems.push(format!(
                "{listing}: record {id} has updated_at {} and data.updatedAt {}, the source {}",
                record["updated_at"], record["data"]["updatedAt"], want["updatedAt"]
            ));
        }
        // The latest version: every property served equals the source's (absent there: null).
        match record["data"]["properties"].as_object() {
            Some(properties) => {
                for (name, value) in properties {
                    let source = want["properties"].get(name).unwrap_or(&Value::Null);
                    if value != source {
                        problems.push(format!(
                            "{listing}: record {id} has {name} = {value}, the source {source}"
                        ));
                    }
                }
            }
            None => problems.push(format!("{listing}: record {id} has no data.properties")),
        }
    }
    let missing: Vec<&str> = expected
        .keys()
        .map(String::as_str)
        .filter(|id| !seen.contains(id))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{listing}: {} of the source's {} records are missing, e.g. {:?}",
            missing.len(),
            expected.len(),
            &missing[..missing.len().min(5)]
        ));
    }
}

/// Waits until the stream's stored set equals `expected` exactly (see [`stored_diff`]).
///
/// # Panics
///
/// When it does not within [`CONVERGE_WITHIN`], with the last difference seen.
pub(crate) async fn wait_synced(api: &Api, stream: &str, expected: &SourceSet) {
    let deadline = Instant::now() + CONVERGE_WITHIN;
    loop {
        // The counts are cheap; the full comparison pages through everything, so it runs once
        // they agree.
        let status = api.status(stream).await;
        let counted = status["records"].as_u64() == Some(expected.live.len() as u64)
            && status["archived"].as_u64() == Some(expected.archived.len() as u64);
        let difference = if counted {
            match stored_diff(api, stream, expected).await {
                Ok(()) => return,
                Err(difference) => difference,
            }
        } else {
            format!(
                "the status counts {} live and {} archived records, the source has {} and {}",
                status["records"],
                status["archived"],
                expected.live.len(),
                expected.archived.len()
            )
        };
        assert!(
            Instant::now() < deadline,
            "stream {stream} did not converge to the source's set within {CONVERGE_WITHIN:?}:\n  \
             {difference}\nlast status: {status}"
        );
        tokio::time::sleep(SYNC_POLL).await;
    }
}

/// Asserts the stream's stored set equals `expected` exactly, now (see [`stored_diff`]).
pub(crate) async fn assert_synced(api: &Api, stream: &str, expected: &SourceSet) {
    if let Err(difference) = stored_diff(api, stream, expected).await {
        panic!("stream {stream} differs from the source:\n  {difference}");
    }
}

/// Milliseconds since the epoch of an RFC 3339 time (`2025-07-07T20:27:17.947Z`, any fraction,
/// `Z` or an offset); `None` when it is not one.
pub(crate) fn rfc3339_millis(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<i64> {
        let digits = text.get(from..to)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Milliseconds: the first three digits, padded ("5" is 500 ms).
        millis = format!("{:0<3}", &fraction[..digits.min(3)]).parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hours, minutes) = rest[1..].split_once(':')?;
            if hours.len() != 2 || minutes.len() != 2 {
                return None;
            }
            sign * (hours.parse::<i64>().ok()? * 60 + minutes.parse::<i64>().ok()?)
        }
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second
        - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The warehouse table `hubspot.contacts` equals the fake's set: every id once, its archived
/// flag and email.
pub(crate) async fn assert_table_equals(url: &str, expected: &SourceSet) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT id, archived, properties ->> 'email' FROM hubspot.contacts",
            &[],
        )
        .await
        .unwrap();
    let live: std::collections::BTreeSet<String> = rows
        .iter()
        .filter(|r| !r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect();
    let archived: std::collections::BTreeSet<String> = rows
        .iter()
        .filter(|r| r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect();
    let expected_live: std::collections::BTreeSet<String> = expected.live.keys().cloned().collect();
    let expected_archived: std::collections::BTreeSet<String> =
        expected.archived.keys().cloned().collect();
    assert_eq!(live, expected_live, "the live rows of hubspot.contacts");
    assert_eq!(archived, expected_archived, "the archived rows");
    assert!(
        rows.iter().all(|r| r.get::<_, Option<String>>(2).is_some()),
        "every contact has its email"
    );
    drop(client);
    let _ = connection.await;
}
