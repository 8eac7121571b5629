//! Counters recorded by a test.

/// A counter as recorded: name, sorted labels, value.
pub type CounterValue = (String, Vec<(String, String)>, u64);

fn counters_of(snapshot: metrics_util::debugging::Snapshot) -> Vec<CounterValue> {
    use metrics_util::debugging::DebugValue;
    snapshot
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) => {
                let key = key.key();
                let mut labels: Vec<_> = key
                    .labels()
                    .map(|l| (l.key().to_string(), l.value().to_string()))
                    .collect();
                labels.sort();
                Some((key.name().to_string(), labels, n))
            }
            _ => None,
        })
        .collect()
}

/// Runs `future` on a paused current-thread runtime with its own metrics recorder, and returns
/// the counters it recorded.
pub fn with_metrics(future: impl std::future::Future<Output = ()>) -> Vec<CounterValue> {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime")
            .block_on(future)
    });
    counters_of(snapshotter.snapshot())
}

/// The sum of the counters with this name whose labels include all of `labels`.
pub fn counter_value(counters: &[CounterValue], name: &str, labels: &[(&str, &str)]) -> u64 {
    counters
        .iter()
        .filter(|(n, found, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| found.iter().any(|(fk, fv)| fk == k && fv == v))
        })
        .map(|(_, _, value)| value)
        .sum()
}

/// The process-wide metrics recorder for integration tests: installed on first use; read the
/// counters at any time with [`global_counters`].
pub fn global_counters() -> Vec<CounterValue> {
    static SNAPSHOTTER: std::sync::OnceLock<metrics_util::debugging::Snapshotter> =
        std::sync::OnceLock::new();
    let snapshotter = SNAPSHOTTER.get_or_init(|| {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        // Another recorder may already be installed by the embedding test; then there is
        // nothing to read from this one.
        let _ = recorder.install();
        snapshotter
    });
    counters_of(snapshotter.snapshot())
}
