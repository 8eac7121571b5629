//! Which phase a page reads: the checkpoint's, unless the run must start over (a first sync, a
//! property set of another fingerprint, a refresh due) or reconcile (a sweep due). A run after
//! a finished one starts its incremental window here. A decision on values only, so that the
//! rules are tested without a server.
//!
//! A refresh is due for a stream that reads what HubSpot changes without moving a record's
//! modification time (associations, or a property it calculates), once its last full read
//! began [`HubSpotObject::refresh`](crate::HubSpotObject::refresh) ago. A sweep is due once the
//! last began `sweep_every` ago; a full read that could not compare every id with the store
//! leaves `swept_at` 0, so the next run sweeps.

use std::time::Duration;

use crate::position::{Position, SweepStage};

/// What decides, beside the checkpoint, where a page starts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rules {
    /// The fingerprint of the property set the page is read with.
    pub(super) properties: u64,
    /// Whether the stream reads what changes without moving a record's modification time
    /// (associations, or a property HubSpot calculates), and so reads every record again now
    /// and then.
    pub(super) refreshes: bool,
    /// How often such a stream reads every record again.
    pub(super) refresh: Duration,
    /// How often a run is a reconciliation sweep.
    pub(super) sweep_every: Duration,
    /// Whether there is a store's inventory to reconcile with.
    pub(super) can_sweep: bool,
    /// How far the search index trails writes: a window ends this long before the run began.
    pub(super) settle_delay: Duration,
}

/// Why a page starts where it does, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Why {
    /// Where the checkpoint stands, or a new window after a finished run.
    Resumed,
    /// The first sync of the stream.
    First,
    /// The property set (or the association types) changed: a full read again.
    PropertiesChanged,
    /// The refresh (associations, calculated properties) is due: a full read again.
    RefreshDue,
    /// The reconciliation sweep is due.
    SweepDue,
    /// The sweep is due but there is no store to compare with: skipped, as if done.
    SweepSkipped,
}

impl Rules {
    /// Whether a stream that refreshes is due to read every record again: its last full read
    /// began a refresh interval ago or more.
    pub(super) fn refresh_due(&self, full_at: i64, now: i64) -> bool {
        self.refreshes && now.saturating_sub(full_at) >= millis(self.refresh)
    }

    /// Whether the reconciliation sweep is due: the last began a sweep interval ago or more.
    pub(super) fn sweep_due(&self, swept_at: i64, now: i64) -> bool {
        now.saturating_sub(swept_at) >= millis(self.sweep_every)
    }

    /// Where a page at `at` starts, at `now` (ms), and why.
    pub(super) fn start(&self, at: Option<Position>, now: i64) -> (Position, Why) {
        let properties = self.properties;
        let full = Position::Full {
            last_id: 0,
            started_at: now,
            properties,
        };
        let (at, why) = match at {
            None => return (full, Why::First),
            Some(at) if at.properties() != properties => return (full, Why::PropertiesChanged),
            Some(Position::Done { full_at, .. }) if self.refresh_due(full_at, now) => {
                return (full, Why::RefreshDue)
            }
            Some(Position::Done {
                until,
                full_at,
                swept_at,
                ..
            }) if self.sweep_due(swept_at, now) => {
                if self.can_sweep {
                    let sweep = Position::Sweep {
                        until,
                        started_at: now,
                        stage: SweepStage::Archived { after: None },
                        properties,
                        full_at,
                    };
                    return (sweep, Why::SweepDue);
                }
                let skipped = Position::Done {
                    until,
                    properties,
                    full_at,
                    swept_at: now,
                };
                (skipped, Why::SweepSkipped)
            }
            Some(at) => (at, Why::Resumed),
        };
        (self.window_after(at, now), why)
    }

    /// A finished run's next window: from its end to now less the settle delay (never before
    /// its end), from its first id. Any other position stands as it is.
    fn window_after(&self, at: Position, now: i64) -> Position {
        match at {
            Position::Done {
                until,
                properties,
                full_at,
                swept_at,
            } => Position::Window {
                from: until,
                until: (now - millis(self.settle_delay)).max(until),
                last_id: 0,
                properties,
                full_at,
                swept_at,
            },
            at => at,
        }
    }
}

/// `duration` in ms, saturating.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn rules() -> Rules {
        Rules {
            properties: 7,
            refreshes: false,
            refresh: DAY,
            sweep_every: DAY,
            can_sweep: true,
            settle_delay: Duration::from_secs(30),
        }
    }

    fn done(until: i64, properties: u64, full_at: i64, swept_at: i64) -> Position {
        Position::Done {
            until,
            properties,
            full_at,
            swept_at,
        }
    }

    const NOW: i64 = 10 * 86_400_000;

    #[test]
    fn a_first_sync_and_a_changed_property_set_read_everything() {
        let full = Position::Full {
            last_id: 0,
            started_at: NOW,
            properties: 7,
        };
        assert_eq!(rules().start(None, NOW), (full.clone(), Why::First));
        let other_set = done(NOW - 1_000, 8, NOW - 1_000, NOW - 1_000);
        assert_eq!(
            rules().start(Some(other_set), NOW),
            (full, Why::PropertiesChanged)
        );
    }

    #[test]
    fn a_finished_run_is_followed_by_a_window_up_to_the_settle_delay() {
        let at = done(NOW - 60_000, 7, NOW - 1_000, NOW - 1_000);
        let window = Position::Window {
            from: NOW - 60_000,
            until: NOW - 30_000,
            last_id: 0,
            properties: 7,
            full_at: NOW - 1_000,
            swept_at: NOW - 1_000,
        };
        assert_eq!(rules().start(Some(at), NOW), (window, Why::Resumed));
        // A window never ends before it starts.
        let recent = done(NOW - 10_000, 7, NOW - 1_000, NOW - 1_000);
        let (Position::Window { from, until, .. }, _) = rules().start(Some(recent), NOW) else {
            panic!("a window")
        };
        assert_eq!((from, until), (NOW - 10_000, NOW - 10_000));
    }

    #[test]
    fn a_position_inside_a_phase_is_read_where_it_stands() {
        let at = Position::FullArchived {
            after: Some("100".into()),
            started_at: NOW - 5,
            properties: 7,
        };
        assert_eq!(rules().start(Some(at.clone()), NOW), (at, Why::Resumed));
    }

    #[test]
    fn a_refresh_due_reads_everything_again_only_for_a_stream_that_refreshes() {
        let at = done(NOW - 1_000, 7, NOW - DAY.as_millis() as i64, NOW - 1_000);
        let with_links = Rules {
            refreshes: true,
            ..rules()
        };
        let (position, why) = with_links.start(Some(at.clone()), NOW);
        assert_eq!(why, Why::RefreshDue);
        assert!(matches!(position, Position::Full { last_id: 0, .. }));
        assert_eq!(rules().start(Some(at), NOW).1, Why::Resumed);
    }

    #[test]
    fn a_sweep_due_sweeps_or_without_a_store_is_skipped_into_a_window() {
        let at = done(NOW - 1_000, 7, NOW - 1_000, NOW - DAY.as_millis() as i64);
        let (position, why) = rules().start(Some(at.clone()), NOW);
        assert_eq!(why, Why::SweepDue);
        assert_eq!(
            position,
            Position::Sweep {
                until: NOW - 1_000,
                started_at: NOW,
                stage: SweepStage::Archived { after: None },
                properties: 7,
                full_at: NOW - 1_000,
            }
        );
        let storeless = Rules {
            can_sweep: false,
            ..rules()
        };
        let (position, why) = storeless.start(Some(at), NOW);
        assert_eq!(why, Why::SweepSkipped);
        assert!(
            matches!(position, Position::Window { swept_at: NOW, from, .. } if from == NOW - 1_000),
            "{position:?}"
        );
    }
}
