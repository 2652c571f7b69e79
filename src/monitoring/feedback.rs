//! Ground-truth feedback: the predictions of recent requests, held by (model, request id) in a
//! bounded map with a TTL, joined with the labels callers send later and scored into the
//! predicting version's quality window. A label that arrives after its prediction left the map is
//! counted as late, never an error: feedback is best effort by nature.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::monitoring::quality::{Predictions, QualityWindow, Task};

pub const FEEDBACK: &str = "switchyard_feedback_total";

/// The most items one feedback call may carry.
pub const MAX_ITEMS: usize = 10_000;
/// The longest request id accepted, in characters.
pub const MAX_ID_CHARS: usize = 256;
/// The most labels one item may carry.
pub const MAX_LABELS: usize = 65_536;

/// Registers the help text of the feedback counter.
pub fn describe() {
    metrics::describe_counter!(
        FEEDBACK,
        "Feedback by model and outcome: joined (labelled rows scored), late (items whose \
         prediction was unknown, expired or evicted), invalid (items refused)."
    );
}

/// One label as the caller sent it; what it means depends on the version's task.
#[derive(Debug, Clone, PartialEq)]
pub enum Label {
    Int(i64),
    Float(f64),
    Text(String),
}

/// The labels of one request, one per row.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackItem {
    pub id: String,
    pub labels: Vec<Label>,
}

/// Reads a feedback body: `{"id": "...", "labels": [...]}` or a JSON array of such objects.
/// Errors name the item (by index) and the field at fault.
pub fn parse_feedback(body: &[u8]) -> Result<Vec<FeedbackItem>, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("feedback body is not valid JSON: {e}"))?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(
                    "feedback array is empty; send at least one {\"id\", \"labels\"} item".into(),
                );
            }
            if items.len() > MAX_ITEMS {
                return Err(format!(
                    "feedback holds {} items; at most {MAX_ITEMS} per call",
                    items.len()
                ));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| parse_item(i, item))
                .collect()
        }
        item @ Value::Object(_) => Ok(vec![parse_item(0, item)?]),
        other => Err(format!(
            "feedback must be an object {{\"id\", \"labels\"}} or an array of them, not {}",
            kind(&other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_item(index: usize, item: Value) -> Result<FeedbackItem, String> {
    let Value::Object(mut fields) = item else {
        return Err(format!(
            "item {index}: expected an object with \"id\" and \"labels\", not {}",
            kind(&item)
        ));
    };
    if let Some(extra) = fields.keys().find(|k| *k != "id" && *k != "labels") {
        return Err(format!(
            "item {index}: unknown field \"{extra}\" (an item has \"id\" and \"labels\")"
        ));
    }
    let id = match fields.remove("id") {
        None => return Err(format!("item {index}: \"id\" is missing")),
        Some(Value::String(id)) => id,
        Some(other) => {
            return Err(format!(
                "item {index}: \"id\" must be a string (the request id), not {}",
                kind(&other)
            ));
        }
    };
    if id.is_empty() {
        return Err(format!("item {index}: \"id\" is empty"));
    }
    let chars = id.chars().count();
    if chars > MAX_ID_CHARS {
        return Err(format!(
            "item {index}: \"id\" has {chars} characters; at most {MAX_ID_CHARS}"
        ));
    }
    let labels = match fields.remove("labels") {
        None => return Err(format!("item {index}: \"labels\" is missing")),
        Some(Value::Array(labels)) => labels,
        Some(other) => {
            return Err(format!(
                "item {index}: \"labels\" must be an array (one label per row), not {}",
                kind(&other)
            ));
        }
    };
    if labels.is_empty() {
        return Err(format!("item {index}: \"labels\" is empty"));
    }
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "item {index}: \"labels\" holds {} labels; at most {MAX_LABELS}",
            labels.len()
        ));
    }
    let labels = labels
        .into_iter()
        .enumerate()
        .map(|(j, label)| match label {
            Value::String(s) => Ok(Label::Text(s)),
            Value::Number(n) => Ok(match n.as_i64() {
                Some(i) => Label::Int(i),
                None => Label::Float(n.as_f64().unwrap_or(f64::NAN)),
            }),
            other => Err(format!(
                "item {index}: \"labels\"[{j}] must be a number or a string, not {}",
                kind(&other)
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FeedbackItem { id, labels })
}

/// How one version scores labels: its task and its live quality window. One per loaded version.
#[derive(Debug)]
pub struct Scorer {
    pub task: Task,
    pub window: QualityWindow,
}

impl Scorer {
    pub fn new(task: Task, window: QualityWindow) -> Self {
        Self { task, window }
    }
}

/// A prediction waiting for its labels.
#[derive(Debug, Clone)]
pub struct Pending {
    pub version: u64,
    /// The rollout variant that answered ("stable" / "candidate"), if a rollout was on.
    pub variant: Option<&'static str>,
    pub predictions: Predictions,
    pub scorer: Arc<Scorer>,
}

/// An item refused by `join`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InvalidItem {
    /// The item's position in the call.
    pub index: usize,
    pub id: String,
    pub reason: String,
}

/// What a feedback call achieved.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FeedbackOutcome {
    /// Labelled rows scored.
    pub joined: u64,
    /// Items whose prediction was unknown, expired or evicted.
    pub late: u64,
    pub invalid: Vec<InvalidItem>,
}

type Key = (String, String);

/// "No slot": the end of the order list.
const NIL: usize = usize::MAX;

/// The most expired entries one lock hold drops from the front: expiry is lazy, so a burst of
/// entries expiring together never stalls one call. Expired entries still count against the
/// capacity, so memory stays bounded however slowly they go.
const EXPIRE_BUDGET: usize = 4;

#[derive(Debug)]
struct Node {
    key: Arc<Key>,
    pending: Pending,
    /// The rows this entry counts against the capacity (its predictions, at least one).
    rows: usize,
    inserted_ms: u64,
    prev: usize,
    next: usize,
}

/// The held predictions in insertion order: a doubly linked list over a slab, with a map from key
/// to slot. Removing any entry (joined, replaced, expired, evicted) unlinks it in O(1), so no
/// stale record is ever left behind for a later sweep.
#[derive(Debug)]
struct Inner {
    index: HashMap<Arc<Key>, usize>,
    /// Slots; `None` where free. Never longer than the most entries held at once.
    nodes: Vec<Option<Node>>,
    free: Vec<usize>,
    /// Oldest and newest entries.
    head: usize,
    tail: usize,
    /// Rows held by all entries.
    rows: usize,
    /// Entries removed from the front by `insert` (tests check the work per call).
    #[cfg(test)]
    visited: usize,
}

impl Inner {
    fn new() -> Self {
        Self {
            index: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            rows: 0,
            #[cfg(test)]
            visited: 0,
        }
    }

    fn node(&self, slot: usize) -> Option<&Node> {
        self.nodes.get(slot).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, slot: usize) -> Option<&mut Node> {
        self.nodes.get_mut(slot).and_then(Option::as_mut)
    }

    fn get(&self, key: &Key) -> Option<&Node> {
        self.index.get(key).and_then(|&slot| self.node(slot))
    }

    /// Appends an entry as the newest; the key must not be held.
    fn push_back(&mut self, key: Arc<Key>, pending: Pending, rows: usize, inserted_ms: u64) {
        let node = Node {
            key: key.clone(),
            pending,
            rows,
            inserted_ms,
            prev: self.tail,
            next: NIL,
        };
        let slot = match self.free.pop() {
            Some(slot) if slot < self.nodes.len() => {
                self.nodes[slot] = Some(node);
                slot
            }
            _ => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        };
        match self.node_mut(self.tail) {
            Some(last) => last.next = slot,
            None => self.head = slot,
        }
        self.tail = slot;
        self.rows += rows;
        self.index.insert(key, slot);
    }

    /// Unlinks and returns the entry in `slot`.
    fn remove(&mut self, slot: usize) -> Option<Node> {
        let node = self.nodes.get_mut(slot)?.take()?;
        match self.node_mut(node.prev) {
            Some(prev) => prev.next = node.next,
            None => self.head = node.next,
        }
        match self.node_mut(node.next) {
            Some(next) => next.prev = node.prev,
            None => self.tail = node.prev,
        }
        self.free.push(slot);
        self.index.remove(&node.key);
        self.rows -= node.rows;
        Some(node)
    }

    fn remove_key(&mut self, key: &Key) -> Option<Node> {
        let slot = *self.index.get(key)?;
        self.remove(slot)
    }

    fn pop_front(&mut self) -> Option<Node> {
        #[cfg(test)]
        {
            self.visited += 1;
        }
        self.remove(self.head)
    }

    /// Drops at most `EXPIRE_BUDGET` expired entries from the front.
    fn drop_expired(&mut self, ttl_ms: u64, now_ms: u64) {
        for _ in 0..EXPIRE_BUDGET {
            match self.node(self.head) {
                Some(oldest) if expired(oldest.inserted_ms, ttl_ms, now_ms) => {
                    self.pop_front();
                }
                _ => break,
            }
        }
    }
}

fn expired(inserted_ms: u64, ttl_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(inserted_ms) > ttl_ms
}

/// Whether an id is one `parse_feedback` accepts, so that its labels could ever arrive. Counts
/// characters only when the byte length leaves doubt, so a huge id costs nothing.
fn joinable_id(id: &str) -> bool {
    !id.is_empty()
        && (id.len() <= MAX_ID_CHARS
            || (id.len() <= MAX_ID_CHARS * 4 && id.chars().count() <= MAX_ID_CHARS))
}

/// Predictions waiting for labels, keyed by (model, request id), bounded in predicted rows and
/// in time. Every call does O(1) amortised work under the lock: `insert` runs on the request path.
#[derive(Debug)]
pub struct FeedbackStore {
    capacity_rows: usize,
    ttl_ms: u64,
    inner: Mutex<Inner>,
}

impl FeedbackStore {
    /// A store holding at most `capacity_rows` predicted rows in total (a request counts its
    /// rows, at least one), each prediction for at most `ttl`. A full store forgets its oldest
    /// predictions until the new one fits; a request of more rows than the capacity is not kept.
    pub fn new(capacity_rows: usize, ttl: Duration) -> Self {
        Self {
            capacity_rows,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            inner: Mutex::new(Inner::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Predictions held now (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.lock().index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Predicted rows held now, at most the capacity (expired ones not yet dropped included).
    pub fn rows(&self) -> usize {
        self.lock().rows
    }

    /// Keeps `pending` for the labels of request `id` of `model`; the same id again replaces the
    /// earlier prediction (also when the new one is too large to keep). An id no feedback call
    /// could name (empty, or over `MAX_ID_CHARS` characters) is not kept.
    pub fn insert(&self, model: &str, id: &str, pending: Pending, now_ms: u64) {
        if !joinable_id(id) {
            return;
        }
        let rows = pending.predictions.rows().max(1);
        let key = Arc::new((model.to_string(), id.to_string()));
        let mut inner = self.lock();
        // Unlinking the earlier prediction is O(1); its slot is reused below.
        let replaced = inner.remove_key(&key);
        if rows > self.capacity_rows {
            return;
        }
        inner.drop_expired(self.ttl_ms, now_ms);
        // Each entry is evicted at most once, so this loop is O(1) amortised over inserts.
        while inner.rows + rows > self.capacity_rows && inner.pop_front().is_some() {}
        inner.push_back(key, pending, rows, now_ms);
        drop(inner);
        drop(replaced);
    }

    /// Joins labels with the predictions of `model`'s requests and records each joined item in
    /// its version's quality window at `now_ms`. An item is late when its prediction is unknown,
    /// expired or evicted; invalid (and its prediction kept for a corrected retry) when its labels
    /// do not fit the prediction. A joined prediction is removed: feedback counts once.
    /// `model` must be a served model's name: it becomes a metric label.
    pub fn join(&self, model: &str, items: Vec<FeedbackItem>, now_ms: u64) -> FeedbackOutcome {
        let mut outcome = FeedbackOutcome::default();
        for (index, item) in items.into_iter().enumerate() {
            let key = (model.to_string(), item.id);
            let scored = {
                let mut inner = self.lock();
                inner.drop_expired(self.ttl_ms, now_ms);
                match inner.get(&key) {
                    None => None,
                    Some(e) if expired(e.inserted_ms, self.ttl_ms, now_ms) => {
                        inner.remove_key(&key);
                        None
                    }
                    Some(e) => Some(match score(&e.pending, &item.labels) {
                        Ok(score) => {
                            let scorer = inner.remove_key(&key).map(|e| e.pending.scorer);
                            Ok((score, scorer))
                        }
                        Err(reason) => Err(reason),
                    }),
                }
            };
            match scored {
                None => outcome.late += 1,
                Some(Err(reason)) => outcome.invalid.push(InvalidItem {
                    index,
                    id: key.1,
                    reason,
                }),
                Some(Ok((score, scorer))) => {
                    outcome.joined += score.rows();
                    if let Some(scorer) = scorer {
                        score.record(&scorer.window, now_ms);
                    }
                }
            }
        }
        let count = |outcome: &'static str, n: u64| {
            if n > 0 {
                metrics::counter!(FEEDBACK, "model" => model.to_string(), "outcome" => outcome)
                    .increment(n);
            }
        };
        count("joined", outcome.joined);
        count("late", outcome.late);
        count("invalid", outcome.invalid.len() as u64);
        outcome
    }
}

/// The outcome of one item's labels against its prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Score {
    Labels { correct: u64, total: u64 },
    Errors { abs_sum: f64, sq_sum: f64, n: u64 },
}

impl Score {
    fn rows(&self) -> u64 {
        match *self {
            Score::Labels { total, .. } => total,
            Score::Errors { n, .. } => n,
        }
    }

    fn record(&self, window: &QualityWindow, now_ms: u64) {
        match *self {
            Score::Labels { correct, total } => window.record_labels(correct, total, now_ms),
            Score::Errors { abs_sum, sq_sum, n } => {
                window.record_errors(abs_sum, sq_sum, n, now_ms)
            }
        }
    }
}

/// Scores `labels` against a prediction, or says why they do not fit it.
fn score(pending: &Pending, labels: &[Label]) -> Result<Score, String> {
    let rows = pending.predictions.rows();
    if labels.len() != rows {
        return Err(format!(
            "{} labels for a prediction of {rows} rows; send one label per row",
            labels.len()
        ));
    }
    match (&pending.predictions, &pending.scorer.task) {
        (Predictions::Labels(predicted), Task::Classification { classes }) => {
            let mut correct = 0u64;
            for (row, (label, &p)) in labels.iter().zip(predicted).enumerate() {
                if class_index(label, classes).map_err(|e| format!("label {row}: {e}"))? == p {
                    correct += 1;
                }
            }
            Ok(Score::Labels {
                correct,
                total: rows as u64,
            })
        }
        (Predictions::Values(predicted), Task::Regression) => {
            let (mut abs_sum, mut sq_sum) = (0.0, 0.0);
            for (row, (label, &p)) in labels.iter().zip(predicted).enumerate() {
                let target = target(label).map_err(|e| format!("label {row}: {e}"))?;
                let err = p - target;
                abs_sum += err.abs();
                sq_sum += err * err;
            }
            Ok(Score::Errors {
                abs_sum,
                sq_sum,
                n: rows as u64,
            })
        }
        // The lead builds predictions with the scorer's own task, so this cannot happen; refuse
        // rather than score against the wrong kind of prediction.
        _ => Err("the prediction does not match the version's task".into()),
    }
}

/// A classification label as a class index: an integer (an integral float too), a class name
/// from the card, or an integer string; within the card's classes when it lists them.
fn class_index(label: &Label, classes: &[String]) -> Result<i64, String> {
    let index = match label {
        Label::Int(i) => *i,
        Label::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => *f as i64,
        Label::Float(f) => return Err(format!("class label {f} is not an integer")),
        Label::Text(s) => match classes.iter().position(|c| c == s) {
            Some(i) => i64::try_from(i).map_err(|_| format!("class \"{s}\" has no index"))?,
            None => s.trim().parse::<i64>().map_err(|_| {
                if classes.is_empty() {
                    format!("class label \"{s}\" is not an integer")
                } else {
                    format!(
                        "class label \"{s}\" is neither a class ({}) nor a class index",
                        classes.join(", ")
                    )
                }
            })?,
        },
    };
    if index < 0 {
        return Err(format!("class index {index} is negative"));
    }
    if !classes.is_empty() && index >= classes.len() as i64 {
        return Err(format!(
            "class index {index} is not one of the {} classes (0..{})",
            classes.len(),
            classes.len() - 1
        ));
    }
    Ok(index)
}

/// A regression target: a finite number (a numeric string too).
fn target(label: &Label) -> Result<f64, String> {
    let value = match label {
        Label::Int(i) => *i as f64,
        Label::Float(f) => *f,
        Label::Text(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("target \"{s}\" is not a number"))?,
    };
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("target {value} is not finite"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(body: &str) -> Vec<FeedbackItem> {
        match parse_feedback(body.as_bytes()) {
            Ok(items) => items,
            Err(e) => panic!("{body}: {e}"),
        }
    }

    fn err(body: &str) -> String {
        match parse_feedback(body.as_bytes()) {
            Ok(items) => panic!("{body} parsed: {items:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_one_item_or_an_array() {
        assert_eq!(
            items(r#"{"id": "r1", "labels": [1, 2.5, "setosa"]}"#),
            vec![FeedbackItem {
                id: "r1".into(),
                labels: vec![
                    Label::Int(1),
                    Label::Float(2.5),
                    Label::Text("setosa".into())
                ],
            }]
        );
        let many = items(r#"[{"id": "a", "labels": [0]}, {"labels": [-3], "id": "b"}]"#);
        assert_eq!(many.len(), 2);
        assert_eq!(many[1].id, "b");
        assert_eq!(many[1].labels, vec![Label::Int(-3)]);
        // Beyond i64 is still a number.
        let big = items(r#"{"id": "a", "labels": [18446744073709551615]}"#);
        assert_eq!(big[0].labels, vec![Label::Float(18446744073709551615.0)]);
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        assert!(err("{").contains("not valid JSON"));
        assert!(err("[]").contains("empty"));
        assert!(err("3").contains("not a number"));
        assert!(
            err(r#"[{"id": "a", "labels": [1]}, 5]"#).starts_with("item 1: expected an object")
        );
        assert_eq!(err(r#"{"labels": [1]}"#), "item 0: \"id\" is missing");
        assert!(err(r#"{"id": 7, "labels": [1]}"#).contains("\"id\" must be a string"));
        assert_eq!(
            err(r#"{"id": "", "labels": [1]}"#),
            "item 0: \"id\" is empty"
        );
        assert!(
            err(r#"[{"id": "a", "labels": [1]}, {"id": "b"}]"#)
                .starts_with("item 1: \"labels\" is missing")
        );
        assert!(err(r#"{"id": "a", "labels": 1}"#).contains("\"labels\" must be an array"));
        assert_eq!(
            err(r#"{"id": "a", "labels": []}"#),
            "item 0: \"labels\" is empty"
        );
        assert_eq!(
            err(r#"{"id": "a", "labels": [1, null]}"#),
            "item 0: \"labels\"[1] must be a number or a string, not null"
        );
        assert!(err(r#"{"id": "a", "labels": [[1]]}"#).contains("[0] must be a number"));
        assert!(err(r#"{"id": "a", "label": [1]}"#).contains("unknown field \"label\""));
    }

    #[test]
    fn limits_are_enforced_at_their_edges() {
        let id = "é".repeat(MAX_ID_CHARS);
        assert_eq!(
            items(&format!(r#"{{"id": "{id}", "labels": [1]}}"#))[0].id,
            id
        );
        let long = format!(r#"{{"id": "{id}x", "labels": [1]}}"#);
        assert!(err(&long).contains("257 characters"));

        let labels = vec!["0"; MAX_LABELS].join(",");
        let ok = format!(r#"{{"id": "a", "labels": [{labels}]}}"#);
        assert_eq!(items(&ok)[0].labels.len(), MAX_LABELS);
        let too_many = format!(r#"{{"id": "a", "labels": [{labels},0]}}"#);
        assert!(err(&too_many).contains("65537 labels"));

        let item = r#"{"id": "a", "labels": [0]}"#;
        let ok = format!("[{}]", vec![item; MAX_ITEMS].join(","));
        assert_eq!(items(&ok).len(), MAX_ITEMS);
        let too_many = format!("[{}]", vec![item; MAX_ITEMS + 1].join(","));
        assert!(err(&too_many).contains("10001 items"));
    }

    fn classifier(classes: &[&str]) -> Arc<Scorer> {
        Arc::new(Scorer::new(
            Task::Classification {
                classes: classes.iter().map(|c| c.to_string()).collect(),
            },
            QualityWindow::new(Duration::from_secs(600), Duration::from_secs(60)),
        ))
    }

    fn regressor() -> Arc<Scorer> {
        Arc::new(Scorer::new(
            Task::Regression,
            QualityWindow::new(Duration::from_secs(600), Duration::from_secs(60)),
        ))
    }

    fn labels_of(predicted: &[i64], scorer: &Arc<Scorer>) -> Pending {
        Pending {
            version: 1,
            variant: None,
            predictions: Predictions::Labels(predicted.to_vec()),
            scorer: scorer.clone(),
        }
    }

    fn item(id: &str, labels: Vec<Label>) -> FeedbackItem {
        FeedbackItem {
            id: id.into(),
            labels,
        }
    }

    fn ints(v: &[i64]) -> Vec<Label> {
        v.iter().map(|&i| Label::Int(i)).collect()
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn known_rows_give_the_exact_accuracy() {
        let scorer = classifier(&["setosa", "versicolor", "virginica"]);
        let store = FeedbackStore::new(100, TTL);
        store.insert("iris", "r1", labels_of(&[0, 1, 2, 2], &scorer), 1_000);
        store.insert("iris", "r2", labels_of(&[1], &scorer), 1_000);
        store.insert("iris", "r3", labels_of(&[2, 0], &scorer), 1_000);
        let outcome = store.join(
            "iris",
            vec![
                // 3 of 4 right, by index, name and integer string.
                item(
                    "r1",
                    vec![
                        Label::Int(0),
                        Label::Text("versicolor".into()),
                        Label::Text("1".into()),
                        Label::Float(2.0),
                    ],
                ),
                item("r2", ints(&[0])),
                item("r3", ints(&[2, 0])),
            ],
            2_000,
        );
        assert_eq!(
            outcome,
            FeedbackOutcome {
                joined: 7,
                late: 0,
                invalid: vec![]
            }
        );
        let s = scorer.window.summary(2_000);
        assert_eq!((s.labels, s.correct), (7, 5));
        assert_eq!(s.accuracy, Some(5.0 / 7.0));
        assert!(store.is_empty());
    }

    #[test]
    fn regression_feedback_gives_mae_and_rmse() {
        let scorer = regressor();
        let store = FeedbackStore::new(100, TTL);
        let pending = Pending {
            version: 3,
            variant: Some("candidate"),
            predictions: Predictions::Values(vec![10.0, 20.0, 30.0]),
            scorer: scorer.clone(),
        };
        store.insert("diabetes", "r", pending, 0);
        // Errors -2, 4, 0 (a numeric string is a number too).
        let outcome = store.join(
            "diabetes",
            vec![item(
                "r",
                vec![Label::Int(12), Label::Float(16.0), Label::Text("30".into())],
            )],
            10,
        );
        assert_eq!(outcome.joined, 3);
        let s = scorer.window.summary(10);
        assert_eq!(s.labels, 3);
        assert_eq!(s.mae, Some(2.0));
        assert_eq!(s.rmse, Some((20.0f64 / 3.0).sqrt()));
        assert_eq!(s.accuracy, None);
    }

    #[test]
    fn invalid_items_are_refused_and_the_others_still_count() {
        let scorer = classifier(&["malignant", "benign"]);
        let store = FeedbackStore::new(100, TTL);
        for id in ["a", "b", "c", "d", "e", "f"] {
            store.insert("bc", id, labels_of(&[1, 0], &scorer), 0);
        }
        let outcome = store.join(
            "bc",
            vec![
                item("a", ints(&[1])),
                item("b", ints(&[1, 2])),
                item("c", vec![Label::Int(1), Label::Float(0.5)]),
                item("d", vec![Label::Text("healthy".into()), Label::Int(0)]),
                item("e", ints(&[-1, 0])),
                item(
                    "f",
                    vec![
                        Label::Text("benign".into()),
                        Label::Text("malignant".into()),
                    ],
                ),
            ],
            0,
        );
        assert_eq!(outcome.joined, 2);
        assert_eq!(outcome.late, 0);
        let reasons: Vec<_> = outcome
            .invalid
            .iter()
            .map(|i| (i.index, i.id.as_str(), i.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (
                    0,
                    "a",
                    "1 labels for a prediction of 2 rows; send one label per row"
                ),
                (
                    1,
                    "b",
                    "label 1: class index 2 is not one of the 2 classes (0..1)"
                ),
                (2, "c", "label 1: class label 0.5 is not an integer"),
                (
                    3,
                    "d",
                    "label 0: class label \"healthy\" is neither a class (malignant, benign) nor a class index"
                ),
                (4, "e", "label 0: class index -1 is negative"),
            ]
        );
        let s = scorer.window.summary(0);
        assert_eq!((s.labels, s.correct), (2, 2));
        // Refused items keep their prediction, so a corrected retry joins.
        assert_eq!(store.len(), 5);
        assert_eq!(
            store.join("bc", vec![item("a", ints(&[1, 1]))], 0).joined,
            2
        );
        assert_eq!(scorer.window.summary(0).correct, 3);
    }

    #[test]
    fn regression_targets_must_be_finite_numbers() {
        let store = FeedbackStore::new(10, TTL);
        let pending = Pending {
            version: 1,
            variant: None,
            predictions: Predictions::Values(vec![1.0]),
            scorer: regressor(),
        };
        store.insert("m", "a", pending.clone(), 0);
        let outcome = store.join(
            "m",
            vec![
                item("a", vec![Label::Text("tall".into())]),
                item("a", vec![Label::Text("NaN".into())]),
            ],
            0,
        );
        let reasons: Vec<_> = outcome.invalid.iter().map(|i| i.reason.as_str()).collect();
        assert_eq!(
            reasons,
            vec![
                "label 0: target \"tall\" is not a number",
                "label 0: target NaN is not finite"
            ]
        );
    }

    #[test]
    fn a_joined_prediction_counts_once() {
        let scorer = classifier(&[]);
        let store = FeedbackStore::new(10, TTL);
        store.insert("m", "r", labels_of(&[4], &scorer), 0);
        let first = store.join("m", vec![item("r", ints(&[4])), item("r", ints(&[4]))], 0);
        assert_eq!((first.joined, first.late), (1, 1));
        let again = store.join("m", vec![item("r", ints(&[4]))], 0);
        assert_eq!((again.joined, again.late), (0, 1));
        assert_eq!(scorer.window.summary(0).labels, 1);
    }

    #[test]
    fn unknown_ids_and_other_models_are_late() {
        let scorer = classifier(&[]);
        let store = FeedbackStore::new(10, TTL);
        store.insert("m", "r", labels_of(&[0], &scorer), 0);
        let outcome = store.join(
            "other",
            vec![item("r", ints(&[0])), item("x", ints(&[0]))],
            0,
        );
        assert_eq!((outcome.joined, outcome.late), (0, 2));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn predictions_expire_after_the_ttl() {
        let scorer = classifier(&[]);
        let store = FeedbackStore::new(10, Duration::from_millis(1_000));
        store.insert("m", "old", labels_of(&[0], &scorer), 0);
        store.insert("m", "edge", labels_of(&[0], &scorer), 500);
        store.insert("m", "new", labels_of(&[0], &scorer), 900);
        // "old" is 1500 ms old: expired; "edge" is exactly 1000 ms old: still held.
        let outcome = store.join(
            "m",
            vec![item("old", ints(&[0])), item("edge", ints(&[0]))],
            1_500,
        );
        assert_eq!((outcome.joined, outcome.late), (1, 1));
        // An insert drops expired entries from the front without a join ("new" is 1001 ms old).
        store.insert("m", "later", labels_of(&[0], &scorer), 1_901);
        assert_eq!(store.len(), 1);
        let late = store.join("m", vec![item("new", ints(&[0]))], 1_901);
        assert_eq!(late.late, 1);
    }

    #[test]
    fn a_full_store_evicts_the_oldest() {
        let scorer = classifier(&[]);
        let store = FeedbackStore::new(3, TTL);
        for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            store.insert("m", id, labels_of(&[0], &scorer), i as u64);
        }
        assert_eq!(store.len(), 3);
        let outcome = store.join(
            "m",
            ["a", "b", "c", "d"].map(|id| item(id, ints(&[0]))).to_vec(),
            10,
        );
        assert_eq!((outcome.joined, outcome.late), (3, 1));
        assert_eq!(scorer.window.summary(10).labels, 3);
    }

    #[test]
    fn the_same_id_again_replaces_and_refreshes() {
        let scorer = classifier(&[]);
        let store = FeedbackStore::new(3, TTL);
        store.insert("m", "a", labels_of(&[0], &scorer), 0);
        store.insert("m", "b", labels_of(&[0], &scorer), 1);
        store.insert("m", "a", labels_of(&[1, 1], &scorer), 2);
        // The replaced prediction's row no longer counts.
        assert_eq!((store.len(), store.rows()), (2, 3));
        // "b" is now the oldest: a third id evicts it, not the refreshed "a".
        store.insert("m", "c", labels_of(&[0], &scorer), 3);
        check_invariants(&store);
        let outcome = store.join(
            "m",
            vec![item("a", ints(&[1, 0])), item("b", ints(&[0]))],
            4,
        );
        assert_eq!((outcome.joined, outcome.late), (2, 1));
        assert_eq!(scorer.window.summary(4).correct, 1);
        // The same id under another model is another prediction.
        store.insert("n", "c", labels_of(&[5], &scorer), 5);
        assert_eq!(store.join("n", vec![item("c", ints(&[5]))], 5).joined, 1);
        assert_eq!(store.join("m", vec![item("c", ints(&[0]))], 5).joined, 1);
    }

    /// The list, the index and the row count agree, and rows stay within the capacity.
    fn check_invariants(store: &FeedbackStore) {
        let inner = store.lock();
        let mut rows = 0;
        let mut count = 0;
        let (mut prev, mut slot) = (NIL, inner.head);
        while let Some(node) = inner.node(slot) {
            assert_eq!(node.prev, prev);
            assert_eq!(inner.index.get(&*node.key), Some(&slot));
            assert_eq!(node.rows, node.pending.predictions.rows().max(1));
            rows += node.rows;
            count += 1;
            (prev, slot) = (slot, node.next);
        }
        assert_eq!(slot, NIL);
        assert_eq!(inner.tail, prev);
        assert_eq!(count, inner.index.len());
        assert_eq!(inner.nodes.len(), count + inner.free.len());
        assert_eq!(rows, inner.rows);
        assert!(
            rows <= store.capacity_rows,
            "{rows} > {}",
            store.capacity_rows
        );
    }

    #[test]
    fn joins_and_replacements_leave_nothing_behind() {
        let scorer = classifier(&[]);
        let store = FeedbackStore::new(4, TTL);
        for i in 0..10_000u64 {
            store.insert("m", "same", labels_of(&[0], &scorer), i);
            store.insert("m", &format!("j{i}"), labels_of(&[0], &scorer), i);
            store.join("m", vec![item(&format!("j{i}"), ints(&[0]))], i);
        }
        check_invariants(&store);
        let inner = store.lock();
        assert_eq!(inner.index.len(), 1);
        // Slots are reused: never more than the most entries held at once.
        assert!(inner.nodes.len() <= 2, "{}", inner.nodes.len());
    }

    #[test]
    fn insert_does_constant_work_whatever_the_mix() {
        // The old store swept its whole order queue under the lock once joins had left ~2x
        // capacity stale records; now no insert removes more than the expiry budget plus the
        // entries its own rows displace.
        let scorer = classifier(&[]);
        let capacity = 1_000;
        let store = FeedbackStore::new(capacity, Duration::from_millis(5_000));
        let mut worst = 0;
        let mut total = 0;
        let mut inserts = 0;
        for i in 0..50_000u64 {
            let now = i / 4;
            let before = store.lock().visited;
            store.insert("m", &format!("r{i}"), labels_of(&[0], &scorer), now);
            store.insert("m", "same", labels_of(&[0], &scorer), now);
            let visited = store.lock().visited - before;
            worst = worst.max(visited);
            total += visited;
            inserts += 2;
            // Join most of them, out of order, so removals land in the middle of the list.
            if i % 3 != 0 {
                let id = format!("r{}", i.saturating_sub(i % 7));
                store.join("m", vec![item(&id, ints(&[0]))], now);
            }
        }
        check_invariants(&store);
        assert!(
            worst <= 2 * (EXPIRE_BUDGET + 1),
            "an insert visited {worst}"
        );
        assert!(total <= inserts, "{total} removals for {inserts} inserts");
    }

    #[test]
    fn a_burst_of_expiries_is_dropped_a_few_at_a_time() {
        let scorer = classifier(&[]);
        let store = FeedbackStore::new(10_000, Duration::from_millis(100));
        for i in 0..5_000 {
            store.insert("m", &format!("r{i}"), labels_of(&[0], &scorer), 0);
        }
        // All 5000 expire together; no single call drops more than the budget.
        for step in 1..=10 {
            let before = store.lock().visited;
            store.insert("m", &format!("n{step}"), labels_of(&[0], &scorer), 1_000);
            assert_eq!(store.lock().visited - before, EXPIRE_BUDGET);
            assert_eq!(store.len(), 5_000 - step * (EXPIRE_BUDGET - 1));
        }
        // Expired entries are never joined, whether dropped yet or not.
        let late = store.join("m", vec![item("r4999", ints(&[0]))], 1_000);
        assert_eq!((late.joined, late.late), (0, 1));
        check_invariants(&store);
    }

    #[test]
    fn capacity_counts_predicted_rows() {
        let scorer = classifier(&[]);
        let store = FeedbackStore::new(10, TTL);
        store.insert("m", "a", labels_of(&[0; 4], &scorer), 0);
        store.insert("m", "b", labels_of(&[0; 3], &scorer), 1);
        store.insert("m", "c", labels_of(&[0; 3], &scorer), 2);
        assert_eq!((store.len(), store.rows()), (3, 10));
        // Two more rows evict "a" (4 rows), the oldest, and nothing else.
        store.insert("m", "d", labels_of(&[0; 2], &scorer), 3);
        assert_eq!((store.len(), store.rows()), (3, 8));
        let outcome = store.join("m", vec![item("a", ints(&[0; 4]))], 4);
        assert_eq!(outcome.late, 1);
        // Exactly the capacity fits, evicting everything else.
        store.insert("m", "full", labels_of(&[0; 10], &scorer), 5);
        assert_eq!((store.len(), store.rows()), (1, 10));
        // More rows than the capacity are not kept, and the earlier prediction under that id
        // goes too: labels for the new request must not score against the old one.
        store.insert("m", "full", labels_of(&[1; 11], &scorer), 6);
        assert_eq!((store.len(), store.rows()), (0, 0));
        let outcome = store.join("m", vec![item("full", ints(&[0; 10]))], 7);
        assert_eq!((outcome.joined, outcome.late), (0, 1));
        check_invariants(&store);
    }

    #[test]
    fn rows_stay_bounded_after_many_inserts() {
        let scorer = classifier(&[]);
        let capacity = 500;
        let store = FeedbackStore::new(capacity, TTL);
        let mut rng = fastrand::Rng::with_seed(11);
        for i in 0..20_000u64 {
            let rows = rng.usize(1..=60);
            let id = format!("r{}", rng.u64(0..2_000));
            store.insert("m", &id, labels_of(&vec![0; rows], &scorer), i);
            assert!(store.rows() <= capacity);
            if rng.bool() {
                let id = format!("r{}", rng.u64(0..2_000));
                store.join("m", vec![item(&id, ints(&vec![0; rows]))], i);
            }
        }
        check_invariants(&store);
        // Full after that much traffic: eviction frees only what each insert needs.
        assert!(store.rows() > capacity / 2, "{}", store.rows());
        assert!(store.lock().nodes.len() <= capacity);
    }

    #[test]
    fn ids_no_feedback_could_name_are_not_kept() {
        let scorer = classifier(&[]);
        let store = FeedbackStore::new(100, TTL);
        let longest = "é".repeat(MAX_ID_CHARS);
        store.insert("m", &longest, labels_of(&[0], &scorer), 0);
        store.insert("m", &format!("{longest}x"), labels_of(&[0], &scorer), 0);
        store.insert(
            "m",
            &"x".repeat(MAX_ID_CHARS + 1),
            labels_of(&[0], &scorer),
            0,
        );
        store.insert("m", &"x".repeat(1 << 20), labels_of(&[0], &scorer), 0);
        store.insert("m", "", labels_of(&[0], &scorer), 0);
        assert_eq!(store.len(), 1);
        assert_eq!(
            store.join("m", vec![item(&longest, ints(&[0]))], 0).joined,
            1
        );
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let store = FeedbackStore::new(0, TTL);
        store.insert("m", "a", labels_of(&[0], &classifier(&[])), 0);
        store.insert("m", "b", labels_of(&[], &classifier(&[])), 0);
        assert!(store.is_empty());
        assert_eq!(store.join("m", vec![item("a", ints(&[0]))], 0).late, 1);
    }

    #[test]
    fn outcomes_are_counted_per_model() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let scorer = classifier(&[]);
            let store = FeedbackStore::new(10, TTL);
            store.insert("iris", "a", labels_of(&[0, 1], &scorer), 0);
            store.insert("iris", "b", labels_of(&[0], &scorer), 0);
            store.join(
                "iris",
                vec![
                    item("a", ints(&[0, 0])),
                    item("b", ints(&[0, 0])),
                    item("x", ints(&[0])),
                    item("y", ints(&[0])),
                ],
                0,
            );
        });
        let text = handle.render();
        for line in [
            r#"switchyard_feedback_total{model="iris",outcome="joined"} 2"#,
            r#"switchyard_feedback_total{model="iris",outcome="late"} 2"#,
            r#"switchyard_feedback_total{model="iris",outcome="invalid"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
    }
}
