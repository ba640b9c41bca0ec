//! Integrity (`mirrorctl check`): the mirror against its own rules, and against a snapshot of
//! the source (docs/snapshot.md). Both read in pages — the self-check by conversation id in
//! key order, the source check a chunk of documents at a time with the keys it saw kept in a
//! temporary table — so memory stays bounded whatever the sizes. Reports count every finding
//! and name a sample; `--details` writes every one, and `repair --from-details` takes the
//! repairable ones from there.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::event::{Event, Family, Limits};
use crate::inputs::{self, Item};
use crate::store::{CheckCursor, Comparison, Store, StoreError};
use crate::timestamp::Timestamp;

pub use crate::store::Inconsistency;

/// How many records a report names per finding.
pub const SAMPLE: usize = 10;

/// A count, and the first few ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Found {
    pub count: u64,
    pub sample: Vec<String>,
}

impl Found {
    fn add(&mut self, id: impl FnOnce() -> String) {
        self.count += 1;
        if self.sample.len() < SAMPLE {
            self.sample.push(id());
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot write the details: {0}")]
    Details(#[from] std::io::Error),
}

fn entity(a: &str, b: &str) -> String {
    if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}/{b}")
    }
}

/// Writes one details line, when details were asked for.
fn detail(out: &mut Option<&mut (dyn Write + Send)>, line: Value) -> Result<(), CheckError> {
    if let Some(out) = out.as_mut() {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SelfCheckReport {
    /// Conversations looked at (their messages with them).
    pub conversations: u64,
    /// Every kind, found or not: a count and a sample of ids.
    pub found: BTreeMap<&'static str, Found>,
    /// Findings of every kind.
    pub inconsistent: u64,
    /// Of which `repair` makes right.
    pub repairable: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Whether the check reached the end; a check with a deadline may stop before it.
    pub complete: bool,
    /// Where it began (a run going on from an earlier one), and where it stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<CheckCursor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<CheckCursor>,
}

impl SelfCheckReport {
    /// The figures of the scheduled check's metrics: each kind's count, their sum
    /// (`inconsistent`), the repairable part, the conversations looked at and, when the
    /// check pruned the ledger, the applied keys it deleted.
    pub fn counts(&self, applied_keys_pruned: Option<u64>) -> Vec<(&'static str, u64)> {
        let mut counts: Vec<(&'static str, u64)> = self
            .found
            .iter()
            .map(|(kind, found)| (*kind, found.count))
            .collect();
        counts.push(("inconsistent", self.inconsistent));
        counts.push(("repairable", self.repairable));
        counts.push(("conversations_checked", self.conversations));
        counts.push(("check_pass_complete", u64::from(self.complete)));
        if let Some(pruned) = applied_keys_pruned {
            counts.push(("applied_keys_pruned", pruned));
        }
        counts
    }
}

pub struct SelfCheckOptions {
    /// Conversations per page (one set of queries each).
    pub page: usize,
    /// A stub conversation older than this is reported.
    pub stub_age: Duration,
    /// The scheduled check's time budget (`MIRROR_CHECK_BUDGET`): it stops after this and
    /// the next run goes on where it stopped. `None`: one whole pass (`mirrorctl check`).
    pub budget: Option<Duration>,
}

/// The mirror against its own rules. Every finding goes to `details` as one JSON line
/// (`{"kind", "conversationId", "messageId"}` or `{"kind", "userId", "targetId"}`).
pub async fn self_check(
    store: &Store,
    options: &SelfCheckOptions,
    details: Option<&mut (dyn Write + Send)>,
) -> Result<SelfCheckReport, CheckError> {
    self_check_from(store, options, details, None, None).await
}

/// As [`self_check`], going on from `from` (where an earlier run stopped) and stopping, at a
/// page's end, once `deadline` has passed: the report says where (`stopped_at`), for the next
/// run to go on from, or that it reached the end (`complete`).
pub async fn self_check_from(
    store: &Store,
    options: &SelfCheckOptions,
    mut details: Option<&mut (dyn Write + Send)>,
    from: Option<&CheckCursor>,
    deadline: Option<std::time::Instant>,
) -> Result<SelfCheckReport, CheckError> {
    let stub_before = Timestamp::ago(options.stub_age).unwrap_or_else(Timestamp::now);
    store.analyze().await?;
    let pass_started_at = from.map_or_else(
        || Timestamp::now().to_string(),
        |c| c.pass_started_at.clone(),
    );
    // At least one page a run, so that even a budget too small for it makes progress.
    let mut pages = 0u64;
    let out_of_time =
        |pages: u64| pages > 0 && deadline.is_some_and(|d| std::time::Instant::now() >= d);
    let stop = |follows: bool, after: (String, String)| CheckCursor {
        follows,
        after,
        pass_started_at: pass_started_at.clone(),
    };
    let mut stopped = None;
    let mut found: BTreeMap<Inconsistency, Found> = BTreeMap::new();
    let mut conversations = 0u64;
    let in_follows = from.is_some_and(|c| c.follows);
    let mut after = from
        .filter(|_| !in_follows)
        .map_or_else(String::new, |c| c.after.0.clone());
    while !in_follows && stopped.is_none() {
        if out_of_time(pages) {
            stopped = Some(stop(false, (after.clone(), String::new())));
            break;
        }
        pages += 1;
        let ids = store.conversation_ids_after(&after, options.page).await?;
        let Some(last) = ids.last() else { break };
        after.clone_from(last);
        conversations += ids.len() as u64;
        for (kind, a, b) in store.self_check(&ids, stub_before).await? {
            found.entry(kind).or_default().add(|| entity(&a, &b));
            let mut line = json!({ "kind": kind.name(), "conversationId": a });
            if !b.is_empty() {
                line["messageId"] = b.into();
            }
            detail(&mut details, line)?;
        }
    }
    let mut after = from
        .filter(|_| in_follows)
        .map_or_else(Default::default, |c| c.after.clone());
    while stopped.is_none() {
        if out_of_time(pages) {
            stopped = Some(stop(true, after.clone()));
            break;
        }
        pages += 1;
        let edges = store.self_follows_after(&after, options.page).await?;
        let Some(last) = edges.last() else { break };
        after = last.clone();
        for (user, target) in edges {
            let kind = Inconsistency::SelfFollow;
            found
                .entry(kind)
                .or_default()
                .add(|| entity(&user, &target));
            detail(
                &mut details,
                json!({ "kind": kind.name(), "userId": user, "targetId": target }),
            )?;
        }
    }
    if let Some(out) = details {
        out.flush()?;
    }
    let count = |repairable: bool| {
        (found.iter())
            .filter(|(k, _)| !repairable || k.repairable())
            .map(|(_, f)| f.count)
            .sum()
    };
    Ok(SelfCheckReport {
        conversations,
        inconsistent: count(false),
        repairable: count(true),
        found: Inconsistency::ALL
            .into_iter()
            .map(|k| (k.name(), found.get(&k).cloned().unwrap_or_default()))
            .collect(),
        details: None,
        complete: stopped.is_none(),
        resumed_from: from.cloned(),
        stopped_at: stopped,
    })
}

/// The conversations a self-check's details name as repairable, read line by line.
pub fn repairable_conversations(path: &std::path::Path) -> Result<Vec<String>, String> {
    use std::io::BufRead;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut ids = std::collections::BTreeSet::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line).map_err(|_| {
            format!(
                "{} line {}: not a line of `check --details` (not JSON)",
                path.display(),
                n + 1
            )
        })?;
        let kind = value["kind"].as_str().and_then(Inconsistency::from_name);
        match (kind, value["conversationId"].as_str()) {
            (Some(kind), Some(id)) if kind.repairable() => {
                ids.insert(id.to_string());
            }
            (Some(_), _) => {}
            (None, _) => {
                return Err(format!(
                    "{} line {}: not a line of `check --details` (no known \"kind\")",
                    path.display(),
                    n + 1
                ))
            }
        }
    }
    Ok(ids.into_iter().collect())
}

/// One family's comparison with the source.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyReport {
    /// Documents of this family in the snapshot.
    pub documents: u64,
    pub matched: u64,
    /// In the source, not in SQL (or only as a stub conversation).
    pub missing: Found,
    /// Live in SQL, absent from the source.
    pub extra: Found,
    /// In both, the mirror holding an older or different version.
    pub mismatched: Found,
    /// Mismatched records by column that differs.
    pub mismatched_fields: BTreeMap<&'static str, u64>,
    /// The mirror holds a newer version than the snapshot: not drift (the snapshot is older
    /// than the live events).
    pub mirror_newer: Found,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    pub families: BTreeMap<&'static str, FamilyReport>,
    /// Snapshot lines that are not documents, with the reasons of the first few.
    pub unreadable: Found,
    /// Documents compared, plus extra rows.
    pub checked: u64,
    /// Missing + extra + mismatched.
    pub drift: u64,
    /// `drift / checked`.
    pub drift_ratio: f64,
    pub max_drift: f64,
    pub missing: u64,
    pub max_missing: u64,
    /// Drift over `max_drift`, or more missing than `max_missing`: exit 3.
    pub alert: bool,
    /// With `--gate`: whether drift is within it (the read path may move to SQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    pub max_drift: f64,
    pub passed: bool,
}

impl SourceReport {
    /// 3 when the report alerts or fails its gate, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.alert || self.gate.is_some_and(|g| !g.passed) {
            3
        } else {
            0
        }
    }
}

pub struct SourceOptions {
    pub max_drift: f64,
    pub max_missing: u64,
    pub gate: Option<f64>,
    /// Documents per comparison (one key look-up per family each).
    pub chunk: usize,
    pub limits: Limits,
}

/// A ratio given as `0.5%` or `0.005`.
pub fn ratio(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(number) => (number, 100.0),
        None => (text, 1.0),
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(n / scale),
        _ => Err(format!("{text:?}: expected a ratio such as 0.5% or 0.005")),
    }
}

/// The snapshot at `path` against the mirror, family by family. Every record that is not
/// matched goes to `details` as one JSON line (`{"family", "id", "status", "fields"?,
/// "line"?}`).
pub async fn check_source(
    store: &Store,
    path: PathBuf,
    options: &SourceOptions,
    mut details: Option<&mut (dyn Write + Send)>,
) -> Result<SourceReport, CheckError> {
    store.analyze().await?;
    let mut comparer = store.comparer().await?;
    let mut families: BTreeMap<Family, FamilyReport> = Family::ALL
        .into_iter()
        .map(|f| (f, FamilyReport::default()))
        .collect();
    let mut pending: BTreeMap<Family, Vec<(String, Event)>> = BTreeMap::new();
    let mut unreadable = Found::default();
    let mut items = inputs::stream(vec![path], crate::apply::READ_AHEAD);
    let chunk = options.chunk.max(1);
    loop {
        let item = items.recv().await;
        let end = item.is_none();
        match item {
            Some(Item::Record(record)) => {
                let parsed = match &record.body {
                    Some(body) => crate::source::import_event(body, options.limits),
                    None => Err(crate::rejection::Rejection::Empty),
                };
                match parsed {
                    Ok(event) => pending
                        .entry(event.family())
                        .or_default()
                        .push((record.message_id, event)),
                    Err(why) => {
                        unreadable.add(|| format!("{}: {why}", record.message_id));
                        let line = json!({ "line": record.message_id, "status": "unreadable", "reason": why.to_string() });
                        detail(&mut details, line)?;
                    }
                }
            }
            Some(Item::Problem(problem)) => {
                let why = problem.details()["reason"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                unreadable.add(|| format!("{}: {why}", problem.message_id));
                let line =
                    json!({ "line": problem.message_id, "status": "unreadable", "reason": why });
                detail(&mut details, line)?;
            }
            Some(Item::Skipped(_)) | None => {}
        }
        for family in Family::ALL {
            let full = pending.get(&family).is_some_and(|p| p.len() >= chunk);
            if !(full || end) {
                continue;
            }
            let Some(batch) = pending.remove(&family).filter(|b| !b.is_empty()) else {
                continue;
            };
            let events: Vec<Event> = batch.iter().map(|(_, e)| e.clone()).collect();
            let compared = comparer.compare(family, &events).await?;
            let report = families.get_mut(&family).expect("every family");
            for ((line, event), comparison) in batch.iter().zip(compared) {
                report.documents += 1;
                let id = event.key.entity_id();
                let status = match &comparison {
                    Comparison::Matched => {
                        report.matched += 1;
                        continue;
                    }
                    Comparison::Missing => {
                        report.missing.add(|| id.clone());
                        "missing"
                    }
                    Comparison::MirrorNewer => {
                        report.mirror_newer.add(|| id.clone());
                        "mirrorNewer"
                    }
                    Comparison::Mismatched(fields) => {
                        report.mismatched.add(|| id.clone());
                        for field in fields {
                            *report.mismatched_fields.entry(field).or_default() += 1;
                        }
                        "mismatched"
                    }
                };
                let mut out = json!({ "family": family.type_prefix(), "id": id, "status": status, "line": line });
                if let Comparison::Mismatched(fields) = &comparison {
                    out["fields"] = json!(fields);
                }
                detail(&mut details, out)?;
            }
        }
        if end {
            break;
        }
    }
    for family in Family::ALL {
        let report = families.get_mut(&family).expect("every family");
        let mut after = (String::new(), String::new());
        loop {
            let (keys, last) = comparer.unseen_live_page(family, &after, chunk).await?;
            let Some(last) = last else { break };
            after = last;
            for (a, b) in keys {
                let id = entity(&a, &b);
                report.extra.add(|| id.clone());
                let line = json!({ "family": family.type_prefix(), "id": id, "status": "extra" });
                detail(&mut details, line)?;
            }
        }
    }
    if let Some(out) = details {
        out.flush()?;
    }
    let sum = |f: fn(&FamilyReport) -> u64| families.values().map(f).sum::<u64>();
    let missing = sum(|r| r.missing.count);
    let drift = missing + sum(|r| r.extra.count) + sum(|r| r.mismatched.count);
    let checked = sum(|r| r.documents) + sum(|r| r.extra.count);
    let drift_ratio = if checked == 0 {
        0.0
    } else {
        drift as f64 / checked as f64
    };
    Ok(SourceReport {
        families: families
            .into_iter()
            .map(|(f, r)| (f.type_prefix(), r))
            .collect(),
        unreadable,
        checked,
        drift,
        drift_ratio,
        max_drift: options.max_drift,
        missing,
        max_missing: options.max_missing,
        alert: drift_ratio > options.max_drift || missing > options.max_missing,
        gate: options.gate.map(|max_drift| Gate {
            max_drift,
            passed: drift_ratio <= max_drift,
        }),
        details: None,
    })
}
