//! What the two versions of a rollout predict for the same request, compared: the check none of
//! the anchors makes. Classifiers disagree on a row when its label (or the arg-max of its scores)
//! differs; regressors by how far apart their outputs are, relative to the spread of stable's.

use crate::core::tensor::{Tensor, TensorData};

/// How to compare outputs, from the model card's `task` (metadata.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Classification,
    Regression,
    /// No task given: classification when an output holds labels (integers, strings) or scores
    /// (several floats per row), else regression.
    Auto,
}

impl Measure {
    pub fn from_task(task: Option<&str>) -> Self {
        match task {
            Some(t) if t.contains("classif") => Self::Classification,
            Some(t) if t.contains("regress") => Self::Regression,
            _ => Self::Auto,
        }
    }
}

fn rows_of(t: &Tensor) -> usize {
    match t.shape.first() {
        Some(&d) if t.shape.len() > 1 || d >= 0 => d.max(0) as usize,
        _ => 1,
    }
}

fn floats(data: &TensorData) -> Option<Vec<f64>> {
    match data {
        TensorData::Fp16(v) => Some(v.iter().map(|x| f64::from(x.to_f32())).collect()),
        TensorData::Fp32(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
        TensorData::Fp64(v) => Some(v.clone()),
        _ => None,
    }
}

/// Counts the rows of a response that have a NaN or infinite value in any float output:
/// `(rows, non_finite_rows)`. Cheap when everything is finite (no allocation).
pub fn non_finite_rows(outputs: &[Tensor]) -> (u64, u64) {
    let rows = outputs.iter().map(rows_of).max().unwrap_or(0);
    let mut bad: Option<Vec<bool>> = None;
    for t in outputs {
        let r = rows_of(t).max(1);
        let mut mark = |i: usize, len: usize| {
            let width = (len / r).max(1);
            bad.get_or_insert_with(|| vec![false; rows.max(1)])[(i / width).min(rows.max(1) - 1)] =
                true;
        };
        match &t.data {
            TensorData::Fp16(v) => v
                .iter()
                .enumerate()
                .filter(|(_, x)| !x.is_finite())
                .for_each(|(i, _)| mark(i, v.len())),
            TensorData::Fp32(v) => v
                .iter()
                .enumerate()
                .filter(|(_, x)| !x.is_finite())
                .for_each(|(i, _)| mark(i, v.len())),
            TensorData::Fp64(v) => v
                .iter()
                .enumerate()
                .filter(|(_, x)| !x.is_finite())
                .for_each(|(i, _)| mark(i, v.len())),
            _ => {}
        }
    }
    let n = bad.map_or(0, |b| b.iter().filter(|&&x| x).count());
    (rows as u64, n as u64)
}

/// The most regression differences kept per interval (a uniform sample beyond).
const MAX_DIFFS: usize = 50_000;

/// Agreement between stable and candidate over one interval.
#[derive(Debug, Default)]
pub struct Agreement {
    requests: u64,
    rows: u64,
    /// Requests compared as classifications (the rest as regressions).
    classified: u64,
    disagreeing_rows: u64,
    /// Absolute differences of regression outputs (a reservoir sample).
    diffs: Vec<f64>,
    diffs_seen: u64,
    /// Running mean and sum of squares of stable's regression outputs (Welford).
    stable_n: u64,
    stable_mean: f64,
    stable_m2: f64,
}

impl Agreement {
    /// Adds one request both versions answered (outputs matched by name).
    pub fn add(&mut self, measure: Measure, stable: &[Tensor], candidate: &[Tensor]) {
        let rows = stable.iter().map(rows_of).max().unwrap_or(0);
        let classify = match measure {
            Measure::Classification => true,
            Measure::Regression => false,
            Measure::Auto => stable.iter().any(|t| match floats(&t.data) {
                None => true,
                Some(v) => v.len() > rows_of(t).max(1),
            }),
        };
        self.requests += 1;
        self.rows += rows as u64;
        if classify {
            self.classified += 1;
            let mut differs = vec![false; rows.max(1)];
            for s in stable {
                match candidate.iter().find(|c| c.name == s.name) {
                    Some(c) if c.shape == s.shape && c.datatype() == s.datatype() => {
                        mark_label_differences(s, c, &mut differs)
                    }
                    // A different shape or type, or a missing output: every row differs.
                    _ => differs.iter_mut().for_each(|d| *d = true),
                }
            }
            self.disagreeing_rows += differs.iter().take(rows).filter(|&&d| d).count() as u64;
        } else {
            for s in stable {
                let (Some(sv), Some(cv)) = (
                    floats(&s.data),
                    candidate
                        .iter()
                        .find(|c| c.name == s.name)
                        .and_then(|c| floats(&c.data)),
                ) else {
                    continue;
                };
                for (a, b) in sv.iter().zip(&cv) {
                    self.add_stable_value(*a);
                    let d = (a - b).abs();
                    self.add_diff(if d.is_nan() { f64::INFINITY } else { d });
                }
                // A shorter candidate output: the missing values count as infinitely far.
                for _ in cv.len()..sv.len() {
                    self.add_diff(f64::INFINITY);
                }
            }
        }
    }

    fn add_stable_value(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.stable_n += 1;
        let delta = x - self.stable_mean;
        self.stable_mean += delta / self.stable_n as f64;
        self.stable_m2 += delta * (x - self.stable_mean);
    }

    fn add_diff(&mut self, d: f64) {
        self.diffs_seen += 1;
        if self.diffs.len() < MAX_DIFFS {
            self.diffs.push(d);
        } else {
            let j = fastrand::u64(..self.diffs_seen) as usize;
            if j < MAX_DIFFS {
                self.diffs[j] = d;
            }
        }
    }

    /// What the summary needs, copied (cheap for classifiers; the regression sample is copied so
    /// that sorting it happens outside the window's lock).
    pub fn snapshot(&self) -> Agreement {
        Agreement {
            requests: self.requests,
            rows: self.rows,
            classified: self.classified,
            disagreeing_rows: self.disagreeing_rows,
            diffs: self.diffs.clone(),
            diffs_seen: self.diffs_seen,
            stable_n: self.stable_n,
            stable_mean: self.stable_mean,
            stable_m2: self.stable_m2,
        }
    }

    pub fn summary(&self) -> super::window::AgreementSummary {
        let regression = self.classified < self.requests && !self.diffs.is_empty();
        if !regression {
            return super::window::AgreementSummary {
                requests: self.requests,
                rows: self.rows,
                measure: "classification",
                disagreement: if self.rows == 0 {
                    f64::NAN
                } else {
                    self.disagreeing_rows as f64 / self.rows as f64
                },
                p99_relative_difference: f64::NAN,
            };
        }
        let sd = if self.stable_n > 1 {
            (self.stable_m2 / (self.stable_n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let relative = |d: f64| {
            if d == 0.0 {
                0.0
            } else if sd > 0.0 {
                d / sd
            } else {
                f64::INFINITY
            }
        };
        let mut rel: Vec<f64> = self.diffs.iter().map(|&d| relative(d)).collect();
        rel.sort_by(f64::total_cmp);
        let mean = rel.iter().sum::<f64>() / rel.len() as f64;
        let p99 = rel[((rel.len() as f64 * 0.99).ceil() as usize).clamp(1, rel.len()) - 1];
        super::window::AgreementSummary {
            requests: self.requests,
            rows: self.rows,
            measure: "regression",
            disagreement: mean,
            p99_relative_difference: p99,
        }
    }
}

/// Marks the rows where two classification outputs differ: labels (any non-float output) by
/// value, scores (several floats per row) by arg-max, a single float per row by which side of
/// 0.5 it falls.
fn mark_label_differences(s: &Tensor, c: &Tensor, differs: &mut [bool]) {
    let rows = rows_of(s).max(1);
    let mut mark = |row: usize| {
        if let Some(d) = differs.get_mut(row) {
            *d = true;
        }
    };
    if let (Some(a), Some(b)) = (floats(&s.data), floats(&c.data)) {
        if a.is_empty() || a.len() != b.len() {
            if a.len() != b.len() {
                differs.iter_mut().for_each(|d| *d = true);
            }
            return;
        }
        let width = (a.len() / rows).max(1);
        for row in 0..rows {
            let range = (row * width).min(a.len())..((row + 1) * width).min(a.len());
            let (ra, rb) = (&a[range.clone()], &b[range]);
            if ra.is_empty() {
                continue;
            }
            let same = if width == 1 {
                (ra[0] > 0.5) == (rb[0] > 0.5)
            } else {
                argmax(ra) == argmax(rb)
            };
            if !same {
                mark(row);
            }
        }
        return;
    }
    let len = s.data.len();
    let width = (len / rows).max(1);
    for row in 0..rows {
        let (start, end) = (row * width, ((row + 1) * width).min(len));
        if s.data.slice(start, end).ok() != c.data.slice(start, end).ok() {
            mark(row);
        }
    }
}

fn argmax(v: &[f64]) -> Option<usize> {
    if v.iter().any(|x| x.is_nan()) {
        return None;
    }
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &[i64]) -> Tensor {
        Tensor::new("label", vec![v.len() as i64], TensorData::Int64(v.to_vec()))
    }
    fn scores(v: &[f32], width: i64) -> Tensor {
        Tensor::new(
            "probabilities",
            vec![v.len() as i64 / width, width],
            TensorData::Fp32(v.to_vec()),
        )
    }
    fn values(v: &[f32]) -> Tensor {
        Tensor::new(
            "variable",
            vec![v.len() as i64, 1],
            TensorData::Fp32(v.to_vec()),
        )
    }

    #[test]
    fn classifiers_disagree_by_row() {
        let mut a = Agreement::default();
        let s = [
            labels(&[0, 1, 1, 0]),
            scores(&[0.9, 0.1, 0.2, 0.8, 0.3, 0.7, 0.6, 0.4], 2),
        ];
        let c = [
            labels(&[0, 1, 0, 0]),
            scores(&[0.9, 0.1, 0.2, 0.8, 0.6, 0.4, 0.4, 0.6], 2),
        ];
        a.add(Measure::Auto, &s, &c);
        let sum = a.summary();
        // Row 2 differs in both outputs, row 3 in its arg-max only: 2 of 4 rows.
        assert_eq!(
            (sum.measure, sum.rows, sum.disagreement),
            ("classification", 4, 0.5)
        );
        a.add(Measure::Classification, &s, &s);
        assert_eq!(a.summary().disagreement, 0.25);
    }

    #[test]
    fn a_missing_or_reshaped_output_disagrees_on_every_row() {
        let mut a = Agreement::default();
        a.add(
            Measure::Classification,
            &[labels(&[1, 1])],
            &[labels(&[1, 1, 1])],
        );
        assert_eq!(a.summary().disagreement, 1.0);
    }

    #[test]
    fn regressors_differ_relative_to_the_stable_spread() {
        let mut a = Agreement::default();
        // Stable outputs 0, 10, 20, 30 (sd ≈ 12.9); candidate off by 1.29 everywhere.
        let s = [values(&[0.0, 10.0, 20.0, 30.0])];
        let c = [values(&[1.29, 11.29, 21.29, 31.29])];
        a.add(Measure::Regression, &s, &c);
        let sum = a.summary();
        assert_eq!(sum.measure, "regression");
        assert!(
            (sum.disagreement - 0.1).abs() < 0.001,
            "{}",
            sum.disagreement
        );
        assert!((sum.p99_relative_difference - 0.1).abs() < 0.001);
        // Identical outputs: no disagreement; NaN from the candidate: infinitely far.
        let mut same = Agreement::default();
        same.add(Measure::Auto, &s, &s);
        assert_eq!(same.summary().disagreement, 0.0);
        let mut nan = Agreement::default();
        nan.add(
            Measure::Regression,
            &s,
            &[values(&[0.0, f32::NAN, 20.0, 30.0])],
        );
        assert!(nan.summary().disagreement.is_infinite());
    }

    #[test]
    fn empty_or_mismatched_scores_never_panic() {
        let mut a = Agreement::default();
        let empty = Tensor::new("s", vec![2, 0], TensorData::Fp32(vec![]));
        a.add(
            Measure::Classification,
            std::slice::from_ref(&empty),
            std::slice::from_ref(&empty),
        );
        assert_eq!(a.summary().disagreement, 0.0);
    }

    #[test]
    fn non_finite_rows_are_counted_once_per_row() {
        let out = [
            labels(&[0, 1, 1]),
            scores(&[0.5, 0.5, f32::NAN, f32::INFINITY, 0.1, 0.9], 2),
        ];
        assert_eq!(non_finite_rows(&out), (3, 1));
        assert_eq!(non_finite_rows(&[values(&[1.0, 2.0])]), (2, 0));
        assert_eq!(non_finite_rows(&[]), (0, 0));
    }
}
