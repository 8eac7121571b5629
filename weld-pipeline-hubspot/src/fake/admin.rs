//! The admin routes a test drives the fake with: faults, changes, what it served, its data.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use weld_pipeline::sync::Locked;
use weld_pipeline::Timestamp;

use super::data::ObjectSet;
use super::{wire, Dumped, Fake, FaultPlan, Legacy, Mutation, Shared, Stats};

pub(super) fn mutate(fake: &mut Fake, mutation: &Mutation) -> Vec<u64> {
    // Every change to the records is made below: what was counted of them is counted again.
    for set in fake.objects.values_mut() {
        set.live_index = None;
    }
    let now = Timestamp::now().as_millis();
    let mut touched = relink(fake, mutation);
    touched.extend(merge_and_delete(fake, mutation, now));
    let Fake { objects, rng, .. } = fake;
    let Some(set) = objects.get_mut(super::canonical(&mutation.object)) else {
        return vec![];
    };
    // Distinct records, chosen at random.
    let live = set.live_shuffled(rng);
    let stamp = |i: usize| if mutation.tie { now } else { now - i as i64 };
    // The property an edit changes: a contact's first name, another type's first own property.
    let edited = set
        .defaults
        .iter()
        .find(|p| {
            !matches!(
                **p,
                "createdate" | "hs_object_id" | "lastmodifieddate" | "hs_lastmodifieddate"
            ) && (set.object_type != "contacts" || **p == "firstname")
        })
        .map_or("firstname", |p| *p);
    for (i, &id) in live.iter().take(mutation.modify).enumerate() {
        set.touch(id, stamp(i));
        if let Some(object) = set.records.get_mut(&id) {
            object.properties.insert(
                edited.into(),
                Some(
                    mutation
                        .value
                        .clone()
                        .unwrap_or_else(|| format!("Changed{i}")),
                ),
            );
        }
        touched.push(id);
    }
    for i in 0..mutation.create {
        let at = stamp(i);
        touched.push(set.create(rng, at, at));
    }
    if let Some(name) = &mutation.add_property {
        set.add_property(name, now);
    }
    recalculate(set, rng, mutation.recalculate, &mut touched);
    let live = set.live_shuffled(rng);
    for &id in live.iter().take(mutation.archive) {
        if let Some(object) = set.records.get_mut(&id) {
            if object.archived_at.is_none() {
                object.archived_at = Some(now);
                touched.push(id);
            }
        }
    }
    touched
}

/// Gives `count` random live records a new value of every calculated property, their
/// modification times unchanged, as HubSpot recomputes a rollup or a time in stage.
fn recalculate(set: &mut ObjectSet, rng: &mut fastrand::Rng, count: usize, touched: &mut Vec<u64>) {
    let calculated: Vec<String> = set
        .definitions
        .iter()
        .filter(|d| d.is_calculated())
        .map(|d| d.name.clone())
        .collect();
    if calculated.is_empty() {
        return;
    }
    for id in set.live_shuffled(rng).into_iter().take(count) {
        if let Some(object) = set.records.get_mut(&id) {
            for name in &calculated {
                let value = object.properties.entry(name.clone()).or_insert(None);
                let before: u64 = value.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
                *value = Some((before + 1).to_string());
            }
            touched.push(id);
        }
    }
}

/// Links `mutation.relink` random live records to one other record of `relink_to` each, instead
/// of what they linked to there.
fn relink(fake: &mut Fake, mutation: &Mutation) -> Vec<u64> {
    let from = super::canonical(&mutation.object).to_string();
    let to = super::canonical(mutation.relink_to.as_deref().unwrap_or("companies")).to_string();
    let Fake {
        objects,
        rng,
        links,
        ..
    } = fake;
    let (Some(set), Some(targets)) = (objects.get(&from), objects.get(&to)) else {
        return vec![];
    };
    let targets = targets.live_shuffled(rng);
    let mut relinked = Vec::new();
    for id in set.live_shuffled(rng).into_iter().take(mutation.relink) {
        let before = links.of(&from, id, &to).to_vec();
        let Some(&target) = targets.iter().find(|t| !before.contains(t)) else {
            break;
        };
        links.unlink_all(&from, id, &to);
        links.link(&from, id, &to, target);
        relinked.push(id);
    }
    relinked
}

/// Merges `mutation.merge` pairs of live records and deletes `mutation.delete` live ones and
/// `mutation.delete_archived` archived ones for good. Returns the primaries and the deleted ids.
fn merge_and_delete(fake: &mut Fake, mutation: &Mutation, now: i64) -> Vec<u64> {
    let object = super::canonical(&mutation.object).to_string();
    let Fake {
        objects,
        rng,
        links,
        merged,
        ..
    } = fake;
    let Some(set) = objects.get_mut(&object) else {
        return vec![];
    };
    let mut touched = Vec::new();
    let live = set.live_shuffled(rng);
    for pair in live.chunks_exact(2).take(mutation.merge) {
        let (secondary, primary) = (pair[0], pair[1]);
        set.records.remove(&secondary);
        for (to, ids) in links.remove(&object, secondary) {
            for id in ids {
                links.link(&object, primary, &to, id);
            }
        }
        set.touch(primary, now);
        if let Some(record) = set.records.get_mut(&primary) {
            let ids = record
                .properties
                .entry("hs_merged_object_ids".into())
                .or_insert(None);
            *ids = Some(match ids.take() {
                Some(before) if !before.is_empty() => format!("{before};{secondary}"),
                _ => secondary.to_string(),
            });
        }
        merged.push((object.clone(), secondary, primary));
        touched.push(primary);
    }
    let live = set.live_shuffled(rng);
    for id in live.into_iter().take(mutation.delete) {
        set.records.remove(&id);
        links.remove(&object, id);
        touched.push(id);
    }
    let mut archived: Vec<u64> = set
        .records
        .values()
        .filter(|o| o.archived_at.is_some())
        .map(|o| o.id)
        .collect();
    rng.shuffle(&mut archived);
    for id in archived.into_iter().take(mutation.delete_archived) {
        set.records.remove(&id);
        links.remove(&object, id);
        touched.push(id);
    }
    touched
}

pub(super) fn dump(fake: &Fake, object: &str) -> Vec<Dumped> {
    fake.objects
        .get(super::canonical(object))
        .map(|set| {
            set.records
                .values()
                .map(|o| Dumped {
                    id: o.id.to_string(),
                    updated_at: wire::iso(o.updated_at),
                    archived: o.archived_at.is_some(),
                    properties: o.properties.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) async fn admin_faults(
    State(state): State<Shared>,
    Json(plans): Json<Vec<FaultPlan>>,
) -> StatusCode {
    state.locked().faults.extend(plans);
    StatusCode::NO_CONTENT
}

/// The round trip to set: `{"ms":150}`.
#[derive(Deserialize)]
pub(super) struct Latency {
    ms: u64,
}

pub(super) async fn admin_latency(
    State(state): State<Shared>,
    Json(latency): Json<Latency>,
) -> StatusCode {
    state.locked().config.latency = std::time::Duration::from_millis(latency.ms);
    StatusCode::NO_CONTENT
}

/// Whether the legacy paths are retired: `{"retired":true}`.
#[derive(Deserialize)]
pub(super) struct LegacySwitch {
    retired: bool,
}

pub(super) async fn admin_legacy(
    State(state): State<Shared>,
    Json(switch): Json<LegacySwitch>,
) -> StatusCode {
    state.locked().config.legacy = if switch.retired {
        Legacy::Retired
    } else {
        Legacy::Served
    };
    StatusCode::NO_CONTENT
}

pub(super) async fn admin_mutate(
    State(state): State<Shared>,
    Json(mutation): Json<Mutation>,
) -> Json<Vec<u64>> {
    Json(mutate(&mut state.locked(), &mutation))
}

pub(super) async fn admin_stats(State(state): State<Shared>) -> Json<Stats> {
    Json(state.locked().stats.clone())
}

/// The query of `GET /_admin/dump`: which object type.
#[derive(Deserialize)]
pub(super) struct DumpQuery {
    object: String,
}

pub(super) async fn admin_dump(
    State(state): State<Shared>,
    Query(query): Query<DumpQuery>,
) -> Json<Vec<Dumped>> {
    Json(dump(&state.locked(), &query.object))
}
