//! Training/serving skew: counting serving values in the baseline's own bins, and the statistics
//! that compare those counts with the training proportions.
//!
//! One implementation serves both the online window (every request goes through
//! [`Profiler::observe`]) and the offline reader of capture files, so both give the same numbers.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::core::signature::{Signature, TensorSpec};
use crate::core::tensor::{DataType, Tensor, TensorData};
use crate::monitoring::baseline::{
    Baseline, BaselineError, BaselineFeature, Distribution, FeatureKind, parse_number,
};

/// Stands in for a zero proportion in PSI, where `ln(q/p)` is otherwise infinite (Evidently's
/// choice, so our numbers match theirs).
pub const PSI_EPS: f64 = 1e-4;

/// How a feature's values find their bucket.
#[derive(Debug, Clone)]
enum Matcher {
    /// Histogram edges (numpy's rule: the last bin includes its right edge).
    Bins(Vec<f64>),
    /// Categorical values, sorted for binary search: as numbers (numeric tensors) and as bytes
    /// (BYTES tensors); each entry carries its bucket.
    Values {
        numbers: Vec<(f64, usize)>,
        strings: Vec<(Vec<u8>, usize)>,
    },
}

/// One feature, precomputed for counting.
#[derive(Debug, Clone)]
struct Slot {
    label: String,
    kind: FeatureKind,
    numeric: bool,
    /// Start of this feature's buckets in `Profile::counts`: `buckets` counts, then the
    /// out-of-range (numeric) or unseen (categorical) count, then the non-finite count.
    offset: usize,
    buckets: usize,
    index: usize,
    /// Training proportions per bucket, normalised to sum to exactly 1.
    expected: Vec<f64>,
    matcher: Matcher,
}

/// Features reading the same tensor, so each tensor is looked up once per request.
#[derive(Debug, Clone)]
struct Group {
    kind: FeatureKind,
    tensor: String,
    slots: Vec<usize>,
}

/// Counts serving values in a baseline's buckets. Built once per loaded version; observing takes
/// `&self` and no lock.
#[derive(Debug, Clone)]
pub struct Profiler {
    slots: Vec<Slot>,
    groups: Vec<Group>,
    inputs: usize,
    len: usize,
}

/// Counts per feature, laid out by the [`Profiler`] that made it: first one row count per
/// feature (inputs first), then each feature's buckets, its out-of-range/unseen count and its
/// non-finite count.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    counts: Vec<u64>,
    features: usize,
    inputs: usize,
}

impl Profile {
    /// Adds `other`'s counts. Profiles from different profilers (different layouts) are left
    /// unmerged: their buckets mean different things.
    pub fn merge(&mut self, other: &Profile) {
        if self.counts.len() != other.counts.len()
            || self.features != other.features
            || self.inputs != other.inputs
        {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    pub fn clear(&mut self) {
        self.counts.fill(0);
    }

    /// Rows seen: the most rows any input feature saw (all of a request's inputs share its rows;
    /// a feature whose tensor was missing saw fewer).
    pub fn rows(&self) -> u64 {
        let n = if self.inputs > 0 {
            self.inputs
        } else {
            self.features
        };
        self.counts.iter().take(n).copied().max().unwrap_or(0)
    }

    /// True when nothing has been counted.
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|c| *c == 0)
    }
}

impl Profiler {
    /// Precomputes the buckets of every feature in `baseline`. With a `signature`, each feature's
    /// tensor must exist, a fixed row width must cover its column, and its type must suit the
    /// tensor's datatype.
    pub fn new(
        baseline: &Baseline,
        signature: Option<&Signature>,
    ) -> Result<Profiler, BaselineError> {
        let features = baseline.features.len() + baseline.outputs.len();
        let mut slots = Vec::with_capacity(features);
        let mut groups: Vec<Group> = Vec::new();
        let mut offset = features;
        for f in baseline.all_features() {
            if let Some(sig) = signature {
                check_against(f, sig, &baseline.origin)?;
            }
            let slot = slot_for(f, offset);
            offset += slot.buckets + 2;
            let i = slots.len();
            match groups
                .iter_mut()
                .find(|g| g.kind == f.kind && g.tensor == f.tensor)
            {
                Some(g) => g.slots.push(i),
                None => groups.push(Group {
                    kind: f.kind,
                    tensor: f.tensor.clone(),
                    slots: vec![i],
                }),
            }
            slots.push(slot);
        }
        Ok(Profiler {
            slots,
            groups,
            inputs: baseline.features.len(),
            len: offset,
        })
    }

    /// Feature labels in baseline order: inputs by name, outputs as `output:<name>`. The only
    /// label values metrics ever use.
    pub fn feature_names(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.label.clone()).collect()
    }

    /// Names of the input tensors the features read.
    pub fn input_tensors(&self) -> Vec<&str> {
        self.tensors(FeatureKind::Input)
    }

    /// Names of the output tensors the features read.
    pub fn output_tensors(&self) -> Vec<&str> {
        self.tensors(FeatureKind::Output)
    }

    fn tensors(&self, kind: FeatureKind) -> Vec<&str> {
        self.groups
            .iter()
            .filter(|g| g.kind == kind)
            .map(|g| g.tensor.as_str())
            .collect()
    }

    /// A profile with every count zero, laid out for this profiler.
    pub fn empty(&self) -> Profile {
        Profile {
            counts: vec![0; self.len],
            features: self.slots.len(),
            inputs: self.inputs,
        }
    }

    /// Counts one request's rows into `into`. A missing tensor, one whose element count does not
    /// match its shape, or one too narrow for a feature's column is skipped for those features.
    /// No allocation, no lock: this runs on every request.
    pub fn observe(&self, inputs: &[Tensor], outputs: &[Tensor], into: &mut Profile) {
        if into.counts.len() != self.len || into.features != self.slots.len() {
            return;
        }
        let (rows_counts, buckets) = into.counts.split_at_mut(self.slots.len());
        for g in &self.groups {
            let side = match g.kind {
                FeatureKind::Input => inputs,
                FeatureKind::Output => outputs,
            };
            let Some(t) = side.iter().find(|t| t.name == g.tensor) else {
                continue;
            };
            let Some((rows, width)) = rows_and_width(t) else {
                continue;
            };
            for &i in &g.slots {
                let s = &self.slots[i];
                if s.index >= width {
                    continue;
                }
                let start = s.offset - self.slots.len();
                let counts = &mut buckets[start..start + s.buckets + 2];
                if count_column(s, &t.data, rows, width, counts) {
                    rows_counts[i] += rows as u64;
                }
            }
        }
    }
}

/// Rows (first dimension) and elements per row of `t`, or `None` when its data does not match
/// its shape. A 0-d tensor is one row of one element.
fn rows_and_width(t: &Tensor) -> Option<(usize, usize)> {
    let mut shape = t.shape.iter().map(|d| usize::try_from(*d).ok());
    let rows = match shape.next() {
        None => 1,
        Some(d) => d?,
    };
    let mut width = 1usize;
    for d in shape {
        width = width.checked_mul(d?)?;
    }
    (rows.checked_mul(width)? == t.data.len() && width > 0).then_some((rows, width))
}

/// Counts column `s.index` of `rows` rows of `width` elements. False when the datatype cannot
/// hold this feature (BYTES for a numeric feature), so nothing was counted.
fn count_column(
    s: &Slot,
    data: &TensorData,
    rows: usize,
    width: usize,
    counts: &mut [u64],
) -> bool {
    fn each<T: Copy>(
        v: &[T],
        s: &Slot,
        rows: usize,
        width: usize,
        counts: &mut [u64],
        f: impl Fn(T) -> f64,
    ) {
        for x in v.iter().skip(s.index).step_by(width).take(rows) {
            count_number(s, f(*x), counts);
        }
    }
    match data {
        TensorData::Bool(v) => each(v, s, rows, width, counts, |x| f64::from(u8::from(x))),
        TensorData::Uint8(v) => each(v, s, rows, width, counts, f64::from),
        TensorData::Uint16(v) => each(v, s, rows, width, counts, f64::from),
        TensorData::Uint32(v) => each(v, s, rows, width, counts, f64::from),
        TensorData::Uint64(v) => each(v, s, rows, width, counts, |x| x as f64),
        TensorData::Int8(v) => each(v, s, rows, width, counts, f64::from),
        TensorData::Int16(v) => each(v, s, rows, width, counts, f64::from),
        TensorData::Int32(v) => each(v, s, rows, width, counts, f64::from),
        TensorData::Int64(v) => each(v, s, rows, width, counts, |x| x as f64),
        TensorData::Fp16(v) => each(v, s, rows, width, counts, |x| x.to_f64()),
        TensorData::Fp32(v) => each(v, s, rows, width, counts, f64::from),
        TensorData::Fp64(v) => each(v, s, rows, width, counts, |x| x),
        TensorData::Bytes(v) => {
            let Matcher::Values { strings, .. } = &s.matcher else {
                return false;
            };
            let unseen = s.buckets;
            for x in v.iter().skip(s.index).step_by(width).take(rows) {
                match strings.binary_search_by(|(k, _)| k.as_slice().cmp(x)) {
                    Ok(i) => counts[strings[i].1] += 1,
                    Err(_) => counts[unseen] += 1,
                }
            }
        }
    }
    true
}

#[inline]
fn count_number(s: &Slot, x: f64, counts: &mut [u64]) {
    let outside = s.buckets;
    if !x.is_finite() {
        counts[outside + 1] += 1;
        return;
    }
    match &s.matcher {
        Matcher::Bins(edges) => {
            let last = edges.len() - 1;
            if x < edges[0] || x > edges[last] {
                counts[outside] += 1;
            } else {
                // Edges <= x is at least 1 here; x == the last edge belongs to the last bin.
                let bin = (edges.partition_point(|e| *e <= x) - 1).min(last - 1);
                counts[bin] += 1;
            }
        }
        Matcher::Values { numbers, .. } => {
            let x = x + 0.0; // -0.0 is 0.0
            match numbers.binary_search_by(|(v, _)| v.total_cmp(&x)) {
                Ok(i) => counts[numbers[i].1] += 1,
                Err(_) => counts[outside] += 1,
            }
        }
    }
}

fn slot_for(f: &BaselineFeature, offset: usize) -> Slot {
    let p = f.distribution.proportions();
    let sum: f64 = p.iter().sum();
    let expected = p
        .iter()
        .map(|x| if sum > 0.0 { x / sum } else { 0.0 })
        .collect();
    let (numeric, matcher) = match &f.distribution {
        Distribution::Numeric { bin_edges, .. } => (true, Matcher::Bins(bin_edges.clone())),
        Distribution::Categorical { values, .. } => {
            let mut numbers: Vec<(f64, usize)> = values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| parse_number(v).map(|x| (x, i)))
                .collect();
            numbers.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut strings: Vec<(Vec<u8>, usize)> = values
                .iter()
                .enumerate()
                .map(|(i, v)| (v.as_bytes().to_vec(), i))
                .collect();
            strings.sort();
            (false, Matcher::Values { numbers, strings })
        }
    };
    Slot {
        label: f.label(),
        kind: f.kind,
        numeric,
        offset,
        buckets: p.len(),
        index: f.index,
        expected,
        matcher,
    }
}

/// Checks a feature against the version's signature: its tensor exists, a fixed row width
/// covers its column, and its values can be read from the tensor's datatype.
fn check_against(f: &BaselineFeature, sig: &Signature, origin: &str) -> Result<(), BaselineError> {
    let err = |problem: String| BaselineError::Feature {
        origin: origin.to_string(),
        feature: f.label(),
        problem,
    };
    let (role, specs) = match f.kind {
        FeatureKind::Input => ("input", &sig.inputs),
        FeatureKind::Output => ("output", &sig.outputs),
    };
    let Some(spec) = specs.iter().find(|s| s.name == f.tensor) else {
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        return Err(err(format!(
            "the model has no {role} '{}' ({role}s: {})",
            f.tensor,
            names.join(", ")
        )));
    };
    if let Some(width) = fixed_width(spec)
        && f.index >= width
    {
        return Err(err(format!(
            "column {} is outside {role} {spec}, whose rows have {width} element(s)",
            f.index
        )));
    }
    match &f.distribution {
        Distribution::Numeric { .. } if spec.datatype == DataType::Bytes => Err(err(format!(
            "a numeric feature cannot be read from {role} {spec}"
        ))),
        Distribution::Categorical { values, .. }
            if spec.datatype != DataType::Bytes
                && !values.iter().any(|v| parse_number(v).is_some()) =>
        {
            Err(err(format!(
                "no categorical value is a number, so none can match {role} {spec}"
            )))
        }
        _ => Ok(()),
    }
}

/// Elements per row when every dimension after the first is fixed.
fn fixed_width(spec: &TensorSpec) -> Option<usize> {
    spec.shape.iter().skip(1).try_fold(1usize, |acc, d| {
        usize::try_from(*d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// Jensen-Shannon distance (square root of the divergence, base-2 logs): 0 for identical
/// distributions, 1 for disjoint ones. `p` and `q` are proportions over the same buckets.
pub fn js_distance(p: &[f64], q: &[f64]) -> f64 {
    let mut d = 0.0;
    for (&p, &q) in p.iter().zip(q) {
        let m = (p + q) / 2.0;
        if p > 0.0 {
            d += 0.5 * p * (p / m).log2();
        }
        if q > 0.0 {
            d += 0.5 * q * (q / m).log2();
        }
    }
    d.clamp(0.0, 1.0).sqrt()
}

/// Population stability index, `sum (q - p) ln(q / p)`, with [`PSI_EPS`] for a zero proportion.
pub fn psi(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(&p, &q)| {
            let p = if p == 0.0 { PSI_EPS } else { p };
            let q = if q == 0.0 { PSI_EPS } else { q };
            (q - p) * (q / p).ln()
        })
        .sum()
}

/// L-infinity distance: the largest difference in any bucket's proportion.
pub fn linf(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(p, q)| (q - p).abs())
        .fold(0.0, f64::max)
}

/// Alert thresholds: a statistic strictly above its threshold breaches it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    pub js_distance: f64,
    pub psi: f64,
    pub linf: f64,
    pub out_of_range: f64,
    pub non_finite: u64,
}

impl Default for Thresholds {
    /// JS distance 0.1 (Evidently's default for it), PSI 0.2 (the usual "significant shift"
    /// cut-off), L-infinity 0.1 (TFDV's guide uses 0.01 on whole datasets; a window needs room for
    /// sampling noise), 5% out of range, and any non-finite value (the ML Test Score's invariants).
    fn default() -> Self {
        Self {
            js_distance: 0.1,
            psi: 0.2,
            linf: 0.1,
            out_of_range: 0.05,
            non_finite: 0,
        }
    }
}

/// How skew is judged for one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SkewConfig {
    pub thresholds: Thresholds,
    /// Overrides by feature label (`output:<name>` for outputs).
    pub per_feature: HashMap<String, Thresholds>,
    /// Rows a window needs before any feature may alert.
    pub min_rows: u64,
}

impl Default for SkewConfig {
    /// `min_rows` 1000: with n rows drawn from the training distribution itself, the JS distance
    /// over 20 bins is not 0 but about sqrt((bins - 1) / (8 n ln 2)) from sampling noise alone:
    /// ~0.06 at 1000 rows, ~0.2 at 100 (PSI likewise about (bins - 1) / n: 0.02 and 0.19).
    /// Below ~1000 rows the 0.1 threshold would fire on unshifted traffic.
    fn default() -> Self {
        Self {
            thresholds: Thresholds::default(),
            per_feature: HashMap::new(),
            min_rows: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Skew,
    InsufficientData,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Skew => "skew",
            Self::InsufficientData => "insufficient_data",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureType {
    Numeric,
    Categorical,
}

impl FeatureType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Numeric => "numeric",
            Self::Categorical => "categorical",
        }
    }
}

/// One feature's statistics over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSkew {
    pub feature: String,
    pub kind: FeatureKind,
    #[serde(rename = "type")]
    pub feature_type: FeatureType,
    pub rows: u64,
    pub js_distance: Option<f64>,
    pub psi: Option<f64>,
    pub linf: Option<f64>,
    pub out_of_range: Option<f64>,
    pub non_finite: u64,
    pub alert: bool,
    /// The statistics over their threshold (only when the window has enough rows).
    pub breaches: Vec<String>,
    /// The largest ratio of a statistic to its threshold: how bad, for sorting.
    pub score: f64,
}

impl FeatureSkew {
    /// `(statistic, value)` for each statistic this feature has, as the gauge labels name them.
    pub fn statistics(&self) -> Vec<(&'static str, f64)> {
        let mut out = Vec::with_capacity(4);
        for (name, v) in [
            ("js_distance", self.js_distance),
            ("psi", self.psi),
            ("linf", self.linf),
            ("out_of_range", self.out_of_range),
        ] {
            if let Some(v) = v {
                out.push((name, v));
            }
        }
        out.push(("non_finite", self.non_finite as f64));
        out
    }
}

/// The skew of every feature of a version over a window, worst first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkewReport {
    pub rows: u64,
    pub min_rows: u64,
    pub verdict: Verdict,
    pub alerts: usize,
    pub features: Vec<FeatureSkew>,
}

/// A smallest threshold, so a threshold of 0 gives a large finite score rather than infinity
/// (which JSON cannot carry).
const MIN_THRESHOLD: f64 = 1e-12;

/// Compares `profile`'s counts with the baseline `profiler` was built from.
pub fn report(profiler: &Profiler, profile: &Profile, cfg: &SkewConfig) -> SkewReport {
    let blank;
    let profile =
        if profile.counts.len() == profiler.len && profile.features == profiler.slots.len() {
            profile
        } else {
            blank = profiler.empty();
            &blank
        };
    let rows = profile.rows();
    let enough = rows >= cfg.min_rows;
    let mut features: Vec<FeatureSkew> = profiler
        .slots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let t = cfg.per_feature.get(&s.label).unwrap_or(&cfg.thresholds);
            feature_skew(
                s,
                profile.counts[i],
                &profile.counts[s.offset..s.offset + s.buckets + 2],
                t,
                enough && profile.counts[i] >= cfg.min_rows,
            )
        })
        .collect();
    features.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.feature.cmp(&b.feature))
    });
    let alerts = features.iter().filter(|f| f.alert).count();
    let verdict = if !enough {
        Verdict::InsufficientData
    } else if alerts > 0 {
        Verdict::Skew
    } else {
        Verdict::Ok
    };
    SkewReport {
        rows,
        min_rows: cfg.min_rows,
        verdict,
        alerts,
        features,
    }
}

fn feature_skew(
    s: &Slot,
    rows: u64,
    counts: &[u64],
    t: &Thresholds,
    may_alert: bool,
) -> FeatureSkew {
    let non_finite = counts[s.buckets + 1];
    let finite: u64 = counts[..=s.buckets].iter().sum();
    let (mut js, mut ps, mut li, mut oor) = (None, None, None, None);
    if finite > 0 {
        let n = finite as f64;
        // The out-of-range/unseen bucket is last, with training proportion 0.
        let q: Vec<f64> = counts[..=s.buckets].iter().map(|c| *c as f64 / n).collect();
        let mut p = s.expected.clone();
        p.push(0.0);
        if s.numeric {
            js = Some(js_distance(&p, &q));
            ps = Some(psi(&p, &q));
            oor = Some(q[s.buckets]);
        } else {
            li = Some(linf(&p, &q));
        }
    }
    let ratio = |v: f64, limit: f64| v / limit.max(MIN_THRESHOLD);
    let mut score = ratio(non_finite as f64, t.non_finite as f64 + 1.0);
    let mut breaches = Vec::new();
    for (name, v, limit) in [
        ("js_distance", js, t.js_distance),
        ("psi", ps, t.psi),
        ("linf", li, t.linf),
        ("out_of_range", oor, t.out_of_range),
    ] {
        if let Some(v) = v {
            score = score.max(ratio(v, limit));
            if may_alert && v > limit {
                breaches.push(name.to_string());
            }
        }
    }
    if may_alert && non_finite > t.non_finite {
        breaches.push("non_finite".to_string());
    }
    FeatureSkew {
        feature: s.label.clone(),
        kind: s.kind,
        feature_type: if s.numeric {
            FeatureType::Numeric
        } else {
            FeatureType::Categorical
        },
        rows,
        js_distance: js,
        psi: ps,
        linf: li,
        out_of_range: oor,
        non_finite,
        alert: !breaches.is_empty(),
        breaches,
        score,
    }
}

impl SkewReport {
    /// An aligned text table, worst first, under a one-line summary.
    pub fn table(&self) -> String {
        let stat = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
        let header = [
            "FEATURE",
            "TYPE",
            "ROWS",
            "JS",
            "PSI",
            "LINF",
            "OUT-OF-RANGE",
            "NON-FINITE",
            "ALERT",
        ];
        let rows: Vec<[String; 9]> = self
            .features
            .iter()
            .map(|f| {
                [
                    f.feature.clone(),
                    f.feature_type.as_str().to_string(),
                    f.rows.to_string(),
                    stat(f.js_distance),
                    stat(f.psi),
                    stat(f.linf),
                    stat(f.out_of_range),
                    f.non_finite.to_string(),
                    if f.alert {
                        format!("ALERT ({})", f.breaches.join(", "))
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = format!(
            "verdict: {}  rows: {}  min_rows: {}  alerts: {}\n",
            self.verdict.as_str(),
            self.rows,
            self.min_rows,
            self.alerts
        );
        let mut line = |cells: &[&str]| {
            let mut l = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                let pad = w.saturating_sub(cell.chars().count());
                if i == 0 || i == 1 || i == cells.len() - 1 {
                    // Text columns align left, numbers right.
                    let _ = write!(l, "{cell}{}", " ".repeat(pad));
                } else {
                    let _ = write!(l, "{}{cell}", " ".repeat(pad));
                }
                if i + 1 < cells.len() {
                    l.push_str("  ");
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&header);
        for r in &rows {
            let cells: Vec<&str> = r.iter().map(String::as_str).collect();
            line(&cells);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tensor::ByteStrings;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Two numeric inputs of X (4 bins of width 1 over [0, 4], uniform) and a categorical output
    /// `label` (values 0, 1, 2).
    fn baseline() -> Baseline {
        let json = r#"{"input": "X", "rows": 100,
            "features": [
              {"name": "a", "index": 0, "type": "numeric",
               "histogram": {"bin_edges": [0, 1, 2, 3, 4], "proportions": [0.25, 0.25, 0.25, 0.25]}},
              {"name": "b", "index": 1, "type": "numeric",
               "histogram": {"bin_edges": [0, 1, 2, 3, 4], "proportions": [0.25, 0.25, 0.25, 0.25]}}],
            "outputs": [
              {"name": "label", "output": "label", "index": 0, "type": "categorical",
               "values": ["0", "1", "2"], "proportions": [0.5, 0.3, 0.2]}]}"#;
        Baseline::parse(json.as_bytes(), "b.json").unwrap()
    }

    fn x(rows: &[[f64; 2]]) -> Tensor {
        Tensor::new(
            "X",
            vec![rows.len() as i64, 2],
            TensorData::Fp64(rows.iter().flatten().copied().collect()),
        )
    }

    fn label(v: &[i64]) -> Tensor {
        Tensor::new("label", vec![v.len() as i64], TensorData::Int64(v.to_vec()))
    }

    /// The counts of feature `i`: its buckets, then out-of-range/unseen, then non-finite.
    fn counts<'a>(p: &'a Profiler, profile: &'a Profile, i: usize) -> &'a [u64] {
        let s = &p.slots[i];
        &profile.counts[s.offset..s.offset + s.buckets + 2]
    }

    /// `n` rows spread evenly over [0, 4) for both features, optionally shifting `b`.
    fn uniform(n: usize, shift_b: f64) -> Tensor {
        let rows: Vec<[f64; 2]> = (0..n)
            .map(|r| {
                let v = 4.0 * (r as f64 + 0.5) / n as f64;
                [v, v + shift_b]
            })
            .collect();
        x(&rows)
    }

    fn feature<'a>(r: &'a SkewReport, name: &str) -> &'a FeatureSkew {
        r.features.iter().find(|f| f.feature == name).unwrap()
    }

    #[test]
    fn statistics_by_hand() {
        // Values computed in Python from the definitions (base-2 JS distance, PSI with 1e-4).
        let p = [0.5, 0.5, 0.0];
        let q = [1.0, 0.0, 0.0];
        assert!(close(js_distance(&p, &q), 0.5579230452841438));
        assert!(close(psi(&p, &q), 4.60431846666895));
        let p = [0.25, 0.25, 0.25, 0.25, 0.0];
        let q = [0.1, 0.2, 0.3, 0.2, 0.2];
        assert!(close(js_distance(&p, &q), 0.36001578495598857));
        assert!(close(psi(&p, &q), 1.6882944444147043));
        assert!(close(linf(&p, &q), 0.2));
        assert!(close(js_distance(&[1.0, 0.0], &[0.0, 1.0]), 1.0));
        assert_eq!(js_distance(&p, &p), 0.0);
        assert_eq!(psi(&p, &p), 0.0);
        assert_eq!(linf(&p, &p), 0.0);
    }

    #[test]
    fn bins_follow_numpy_with_the_last_edge_inclusive() {
        let b = baseline();
        let p = Profiler::new(&b, None).unwrap();
        let mut profile = p.empty();
        let values = [0.0, 0.999, 1.0, 2.5, 3.999, 4.0, -0.001, 4.001];
        let rows: Vec<[f64; 2]> = values.iter().map(|v| [*v, 0.0]).collect();
        p.observe(&[x(&rows)], &[], &mut profile);
        // bins [0,1) [1,2) [2,3) [3,4], out of range, non-finite
        assert_eq!(counts(&p, &profile, 0), &[2, 1, 1, 2, 2, 0]);
        assert_eq!(profile.rows(), 8);
    }

    #[test]
    fn non_finite_values_are_counted_apart() {
        let b = baseline();
        let p = Profiler::new(&b, None).unwrap();
        let mut profile = p.empty();
        let rows = [
            [f64::NAN, 0.5],
            [f64::INFINITY, 0.5],
            [f64::NEG_INFINITY, 0.5],
            [0.5, 0.5],
        ];
        p.observe(&[x(&rows)], &[], &mut profile);
        assert_eq!(counts(&p, &profile, 0), &[1, 0, 0, 0, 0, 3]);
        let r = report(
            &p,
            &profile,
            &SkewConfig {
                min_rows: 4,
                ..SkewConfig::default()
            },
        );
        let a = feature(&r, "a");
        assert_eq!((a.rows, a.non_finite), (4, 3));
        // The one finite value is all of q: the NaNs are not in it.
        assert!(close(a.out_of_range.unwrap(), 0.0));
        assert!(close(
            a.js_distance.unwrap(),
            js_distance(&[0.25, 0.25, 0.25, 0.25, 0.0], &[1.0, 0.0, 0.0, 0.0, 0.0])
        ));
        assert_eq!(a.breaches, vec!["js_distance", "psi", "non_finite"]);
        assert!(
            !feature(&r, "b")
                .breaches
                .contains(&"non_finite".to_string())
        );
    }

    #[test]
    fn the_report_computes_the_statistics_from_counts() {
        let b = baseline();
        let p = Profiler::new(&b, None).unwrap();
        let mut profile = p.empty();
        // q for a: [0.1, 0.2, 0.3, 0.2] and 0.2 out of range.
        let values = [0.5, 1.5, 1.5, 2.5, 2.5, 2.5, 3.5, 3.5, 9.0, -1.0];
        let rows: Vec<[f64; 2]> = values.iter().map(|v| [*v, 0.5]).collect();
        p.observe(&[x(&rows)], &[], &mut profile);
        let r = report(
            &p,
            &profile,
            &SkewConfig {
                min_rows: 10,
                ..SkewConfig::default()
            },
        );
        let a = feature(&r, "a");
        assert!(close(a.js_distance.unwrap(), 0.36001578495598857));
        assert!(close(a.psi.unwrap(), 1.6882944444147043));
        assert!(close(a.out_of_range.unwrap(), 0.2));
        assert_eq!(a.linf, None);
        assert_eq!(a.feature_type, FeatureType::Numeric);
        assert_eq!(a.kind, FeatureKind::Input);
        assert!(close(a.score, 1.6882944444147043 / 0.2));
    }

    #[test]
    fn the_training_distribution_gives_zero_and_no_alert() {
        let b = baseline();
        let p = Profiler::new(&b, None).unwrap();
        let mut profile = p.empty();
        let labels: Vec<i64> = (0..1000)
            .map(|i| {
                if i < 500 {
                    0
                } else if i < 800 {
                    1
                } else {
                    2
                }
            })
            .collect();
        p.observe(&[uniform(1000, 0.0)], &[label(&labels)], &mut profile);
        let r = report(&p, &profile, &SkewConfig::default());
        assert_eq!(r.verdict, Verdict::Ok);
        assert_eq!(r.rows, 1000);
        for f in &r.features {
            assert!(!f.alert, "{f:?}");
            for (stat, v) in f.statistics() {
                assert!(v.abs() < 1e-12, "{} {stat} = {v}", f.feature);
            }
        }
        assert!(close(feature(&r, "output:label").linf.unwrap(), 0.0));
    }

    #[test]
    fn a_shifted_feature_alerts_and_no_other() {
        let b = baseline();
        let p = Profiler::new(&b, None).unwrap();
        let mut profile = p.empty();
        p.observe(&[uniform(1000, 0.5)], &[], &mut profile);
        let r = report(&p, &profile, &SkewConfig::default());
        assert_eq!(r.verdict, Verdict::Skew);
        assert_eq!(r.alerts, 1);
        assert_eq!(r.features[0].feature, "b", "worst first");
        let shifted = feature(&r, "b");
        assert!(shifted.alert);
        assert!(close(shifted.out_of_range.unwrap(), 0.125));
        assert!(shifted.breaches.contains(&"out_of_range".to_string()));
        assert!(!feature(&r, "a").alert);
        // The output was never observed: no rows, no statistics.
        let out = feature(&r, "output:label");
        assert_eq!((out.rows, out.linf, out.alert), (0, None, false));
    }

    #[test]
    fn a_per_feature_override_replaces_the_thresholds() {
        let b = baseline();
        let p = Profiler::new(&b, None).unwrap();
        let mut profile = p.empty();
        p.observe(&[uniform(1000, 0.5)], &[], &mut profile);
        let lenient = Thresholds {
            js_distance: 1.0,
            psi: 100.0,
            linf: 1.0,
            out_of_range: 0.5,
            non_finite: 0,
        };
        let cfg = SkewConfig {
            per_feature: HashMap::from([("b".to_string(), lenient)]),
            ..SkewConfig::default()
        };
        let r = report(&p, &profile, &cfg);
        assert_eq!(r.verdict, Verdict::Ok);
        assert!(!feature(&r, "b").alert);
    }

    #[test]
    fn below_min_rows_there_are_statistics_but_no_alerts() {
        let b = baseline();
        let p = Profiler::new(&b, None).unwrap();
        let mut profile = p.empty();
        p.observe(&[uniform(999, 2.0)], &[], &mut profile);
        let r = report(&p, &profile, &SkewConfig::default());
        assert_eq!(r.verdict, Verdict::InsufficientData);
        assert_eq!((r.rows, r.min_rows, r.alerts), (999, 1000, 0));
        let shifted = feature(&r, "b");
        assert!(shifted.out_of_range.unwrap() > 0.4);
        assert!(!shifted.alert && shifted.breaches.is_empty());
        assert_eq!(r.features[0].feature, "b", "still sorted worst first");
    }

    #[test]
    fn zero_rows_have_no_statistics() {
        let b = baseline();
        let p = Profiler::new(&b, None).unwrap();
        let r = report(&p, &p.empty(), &SkewConfig::default());
        assert_eq!(r.verdict, Verdict::InsufficientData);
        for f in &r.features {
            assert_eq!(
                (f.js_distance, f.psi, f.linf, f.out_of_range),
                (None, None, None, None)
            );
            assert_eq!((f.rows, f.non_finite, f.score), (0, 0, 0.0));
        }
        // Ties sort by name.
        let names: Vec<&str> = r.features.iter().map(|f| f.feature.as_str()).collect();
        assert_eq!(names, ["a", "b", "output:label"]);
    }

    #[test]
    fn categorical_values_match_numbers_and_strings() {
        let b = baseline();
        let p = Profiler::new(&b, None).unwrap();
        let mut profile = p.empty();
        // Numbers, whatever the datatype: 0, 1, 2 and an unseen 7.
        p.observe(&[], &[label(&[0, 0, 1, 7])], &mut profile);
        let floats = Tensor::new("label", vec![2], TensorData::Fp32(vec![-0.0, 2.0]));
        p.observe(&[], &[floats], &mut profile);
        let strings = ByteStrings::from_items(["1", "2", "cat", "1.0"]).unwrap();
        let bytes = Tensor::new("label", vec![4], TensorData::Bytes(strings));
        p.observe(&[], &[bytes], &mut profile);
        let nan = Tensor::new("label", vec![1], TensorData::Fp64(vec![f64::NAN]));
        p.observe(&[], &[nan], &mut profile);
        // values 0, 1, 2, unseen, non-finite
        assert_eq!(counts(&p, &profile, 2), &[3, 2, 2, 3, 1]);
        // Only outputs were observed, so the window has no rows: judge regardless.
        let r = report(
            &p,
            &profile,
            &SkewConfig {
                min_rows: 0,
                ..SkewConfig::default()
            },
        );
        let l = feature(&r, "output:label");
        assert_eq!((l.rows, l.non_finite), (11, 1));
        // q = [0.3, 0.2, 0.2, 0.3] against p = [0.5, 0.3, 0.2, 0]: the unseen 0.3 is the largest.
        assert!(close(l.linf.unwrap(), 0.3));
        assert_eq!((l.js_distance, l.psi, l.out_of_range), (None, None, None));
        assert_eq!(l.feature_type, FeatureType::Categorical);
        assert_eq!(l.kind, FeatureKind::Output);
        assert_eq!(l.breaches, vec!["linf", "non_finite"]);
    }

    #[test]
    fn every_numeric_datatype_is_read() {
        let b = baseline();
        let p = Profiler::new(&b, None).unwrap();
        let datas = [
            TensorData::Bool(vec![true, false]),
            TensorData::Uint8(vec![1, 0]),
            TensorData::Uint16(vec![1, 0]),
            TensorData::Uint32(vec![1, 0]),
            TensorData::Uint64(vec![1, 0]),
            TensorData::Int8(vec![1, 0]),
            TensorData::Int16(vec![1, 0]),
            TensorData::Int32(vec![1, 0]),
            TensorData::Int64(vec![1, 0]),
            TensorData::Fp16(vec![half::f16::from_f32(1.0), half::f16::from_f32(0.0)]),
            TensorData::Fp32(vec![1.0, 0.0]),
            TensorData::Fp64(vec![1.0, 0.0]),
        ];
        for data in datas {
            let dt = data.datatype();
            let mut profile = p.empty();
            p.observe(&[Tensor::new("X", vec![1, 2], data)], &[], &mut profile);
            assert_eq!(counts(&p, &profile, 0), &[0, 1, 0, 0, 0, 0], "{dt}");
            assert_eq!(counts(&p, &profile, 1), &[1, 0, 0, 0, 0, 0], "{dt}");
        }
        // BYTES cannot hold a numeric feature: skipped, not counted as rows.
        let mut profile = p.empty();
        let bytes = ByteStrings::from_items(["1", "0"]).unwrap();
        p.observe(
            &[Tensor::new("X", vec![1, 2], TensorData::Bytes(bytes))],
            &[],
            &mut profile,
        );
        assert!(profile.is_empty());
    }

    #[test]
    fn tensors_that_do_not_fit_are_skipped() {
        let b = baseline();
        let p = Profiler::new(&b, None).unwrap();
        let mut profile = p.empty();
        let bad = [
            // data shorter than the shape
            Tensor::new("X", vec![2, 2], TensorData::Fp64(vec![1.0, 2.0, 3.0])),
            // a negative dimension
            Tensor::new("X", vec![-1, 2], TensorData::Fp64(vec![1.0, 2.0])),
            // another tensor's name
            Tensor::new("Y", vec![1, 2], TensorData::Fp64(vec![1.0, 2.0])),
        ];
        for t in bad {
            let one = std::slice::from_ref(&t);
            p.observe(one, one, &mut profile);
        }
        assert!(profile.is_empty());
        // One column wide: `a` is counted, `b` (column 1) is not.
        let narrow = Tensor::new("X", vec![3, 1], TensorData::Fp64(vec![0.5, 1.5, 2.5]));
        p.observe(&[narrow], &[], &mut profile);
        assert_eq!(counts(&p, &profile, 0), &[1, 1, 1, 0, 0, 0]);
        assert_eq!(counts(&p, &profile, 1), &[0, 0, 0, 0, 0, 0]);
        assert_eq!(profile.rows(), 3);
        let r = report(&p, &profile, &SkewConfig::default());
        assert_eq!((feature(&r, "a").rows, feature(&r, "b").rows), (3, 0));
        // A profile from another profiler is neither observed into nor reported.
        let other = Profiler::new(
            &Baseline::parse(
                br#"{"input": "X", "features": [
            {"name": "z", "index": 0, "type": "numeric",
             "histogram": {"bin_edges": [0, 1], "proportions": [1]}}]}"#,
                "o.json",
            )
            .unwrap(),
            None,
        )
        .unwrap();
        let mut foreign = other.empty();
        p.observe(&[uniform(4, 0.0)], &[], &mut foreign);
        assert!(foreign.is_empty());
        assert_eq!(report(&p, &foreign, &SkewConfig::default()).rows, 0);
    }

    #[test]
    fn merge_clear_and_rows() {
        let b = baseline();
        let p = Profiler::new(&b, None).unwrap();
        let mut one = p.empty();
        p.observe(&[uniform(10, 0.0)], &[label(&[0; 30])], &mut one);
        // Outputs do not count towards the rows of the request.
        assert_eq!(one.rows(), 10);
        let mut sum = p.empty();
        sum.merge(&one);
        sum.merge(&one);
        let mut twice = p.empty();
        p.observe(&[uniform(10, 0.0)], &[label(&[0; 30])], &mut twice);
        p.observe(&[uniform(10, 0.0)], &[label(&[0; 30])], &mut twice);
        assert_eq!(sum, twice);
        assert_eq!(sum.rows(), 20);
        sum.clear();
        assert_eq!(sum, p.empty());
        assert_eq!(p.feature_names(), ["a", "b", "output:label"]);
        assert_eq!(p.input_tensors(), ["X"]);
        assert_eq!(p.output_tensors(), ["label"]);
    }

    fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn the_signature_must_fit_the_baseline() {
        let b = baseline();
        let sig = |x: TensorSpec, label: TensorSpec| Signature {
            inputs: vec![x],
            outputs: vec![label],
        };
        let ok = sig(
            spec("X", DataType::Fp32, &[-1, 2]),
            spec("label", DataType::Int64, &[-1]),
        );
        assert!(Profiler::new(&b, Some(&ok)).is_ok());
        let variable = sig(
            spec("X", DataType::Fp32, &[-1, -1]),
            spec("label", DataType::Int64, &[-1]),
        );
        assert!(Profiler::new(&b, Some(&variable)).is_ok());
        let cases = [
            (
                sig(
                    spec("input", DataType::Fp32, &[-1, 2]),
                    spec("label", DataType::Int64, &[-1]),
                ),
                "b.json: feature 'a': the model has no input 'X' (inputs: input)",
            ),
            (
                sig(
                    spec("X", DataType::Fp32, &[-1, 1]),
                    spec("label", DataType::Int64, &[-1]),
                ),
                "b.json: feature 'b': column 1 is outside input 'X' (FP32 [-1,1]), whose rows have 1 element(s)",
            ),
            (
                sig(
                    spec("X", DataType::Bytes, &[-1, 2]),
                    spec("label", DataType::Int64, &[-1]),
                ),
                "b.json: feature 'a': a numeric feature cannot be read from input 'X' (BYTES [-1,2])",
            ),
            (
                sig(
                    spec("X", DataType::Fp32, &[-1, 2]),
                    spec("probabilities", DataType::Fp32, &[-1, 3]),
                ),
                "b.json: feature 'output:label': the model has no output 'label'",
            ),
        ];
        for (sig, want) in cases {
            let e = Profiler::new(&b, Some(&sig)).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e:?} does not start with {want:?}");
        }
        let words = Baseline::parse(
            br#"{"input": "X", "features": [
            {"name": "w", "index": 0, "type": "categorical", "values": ["cat", "dog"],
             "proportions": [0.5, 0.5]}]}"#,
            "w.json",
        )
        .unwrap();
        let e = Profiler::new(
            &words,
            Some(&sig(
                spec("X", DataType::Int64, &[-1, 1]),
                spec("y", DataType::Int64, &[-1]),
            )),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("no categorical value is a number"),
            "{e}"
        );
        assert!(
            Profiler::new(
                &words,
                Some(&sig(
                    spec("X", DataType::Bytes, &[-1, 1]),
                    spec("y", DataType::Int64, &[-1])
                ))
            )
            .is_ok()
        );
    }

    #[test]
    fn the_report_round_trips_through_json_and_prints_a_table() {
        let b = baseline();
        let p = Profiler::new(&b, None).unwrap();
        let mut profile = p.empty();
        p.observe(&[uniform(1000, 0.5)], &[], &mut profile);
        let r = report(&p, &profile, &SkewConfig::default());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["verdict"], "skew");
        assert_eq!(json["features"][0]["feature"], "b");
        assert_eq!(json["features"][0]["type"], "numeric");
        assert_eq!(json["features"][0]["kind"], "input");
        assert_eq!(json["features"][0]["linf"], serde_json::Value::Null);
        let back: SkewReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        let table = r.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "verdict: skew  rows: 1000  min_rows: 1000  alerts: 1"
        );
        assert!(lines[1].starts_with("FEATURE"));
        assert!(
            lines[2].starts_with("b ")
                && lines[2].ends_with("ALERT (js_distance, psi, out_of_range)"),
            "{table}"
        );
        assert!(!lines[3].contains("ALERT"), "{table}");
        // Columns line up: every row puts the TYPE column at the same place.
        let at = lines[1].find("TYPE").unwrap();
        for l in &lines[2..] {
            assert!(
                l[at..].starts_with("numeric") || l[at..].starts_with("categorical"),
                "{table}"
            );
        }
    }

    #[test]
    fn a_zero_threshold_scores_large_but_finite() {
        let b = baseline();
        let p = Profiler::new(&b, None).unwrap();
        let mut profile = p.empty();
        p.observe(&[uniform(10, 0.5)], &[], &mut profile);
        let zero = Thresholds {
            js_distance: 0.0,
            psi: 0.0,
            linf: 0.0,
            out_of_range: 0.0,
            non_finite: 0,
        };
        let cfg = SkewConfig {
            thresholds: zero,
            min_rows: 1,
            ..SkewConfig::default()
        };
        let r = report(&p, &profile, &cfg);
        assert!(r.features.iter().all(|f| f.score.is_finite()));
        assert!(serde_json::from_str::<SkewReport>(&serde_json::to_string(&r).unwrap()).is_ok());
    }

    /// Traffic drawn from the iris baseline's own histograms stays under every threshold; the
    /// same traffic with one feature shifted alerts on that feature only.
    #[test]
    fn iris_traffic_from_its_baseline() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/iris/1/baseline.json");
        let b = Baseline::parse(&std::fs::read(&path).unwrap(), "iris").unwrap();
        let p = Profiler::new(&b, None).unwrap();
        let n = 2000;
        let width = b.features.len();
        let sample = |shift: f64| {
            let mut data = vec![0f32; n * width];
            for (j, f) in b.features.iter().enumerate() {
                let Distribution::Numeric {
                    bin_edges,
                    proportions,
                } = &f.distribution
                else {
                    panic!("iris is numeric");
                };
                // Inverse CDF of the histogram, uniform within each bin, at evenly spread
                // quantiles taken in a per-feature order so the columns are not all sorted alike.
                for r in 0..n {
                    let u = (((r * (2 * j + 1)) % n) as f64 + 0.5) / n as f64;
                    let mut acc = 0.0;
                    let mut v = bin_edges[bin_edges.len() - 1];
                    for (k, pk) in proportions.iter().enumerate() {
                        if u < acc + pk {
                            v = bin_edges[k] + (u - acc) / pk * (bin_edges[k + 1] - bin_edges[k]);
                            break;
                        }
                        acc += pk;
                    }
                    let shift = if f.name == "petal length (cm)" {
                        shift
                    } else {
                        0.0
                    };
                    data[r * width + j] = (v + shift) as f32;
                }
            }
            Tensor::new("X", vec![n as i64, width as i64], TensorData::Fp32(data))
        };
        let mut profile = p.empty();
        p.observe(&[sample(0.0)], &[], &mut profile);
        let r = report(&p, &profile, &SkewConfig::default());
        assert_eq!(r.verdict, Verdict::Ok, "{}", r.table());
        let mut profile = p.empty();
        p.observe(&[sample(1.5)], &[], &mut profile);
        let r = report(&p, &profile, &SkewConfig::default());
        assert_eq!(r.verdict, Verdict::Skew, "{}", r.table());
        let alerting: Vec<&str> = r
            .features
            .iter()
            .filter(|f| f.alert)
            .map(|f| f.feature.as_str())
            .collect();
        assert_eq!(alerting, ["petal length (cm)"], "{}", r.table());
    }
}
