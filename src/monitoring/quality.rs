//! Live quality of a version from ground-truth labels: what a prediction was (`predictions`), how
//! right it turned out over a sliding window (`QualityWindow`), and whether two variants differ by
//! more than chance (`two_proportion_p_value`).

use std::sync::Mutex;
use std::time::Duration;

use crate::core::signature::TensorSpec;
use crate::core::tensor::{DataType, Tensor, TensorData};

pub const QUALITY: &str = "switchyard_model_quality";
pub const QUALITY_LABELS: &str = "switchyard_model_quality_labels";

/// Registers the help text of the quality gauges this module sets.
pub fn describe() {
    metrics::describe_gauge!(
        QUALITY,
        "Live quality over the quality window from joined feedback (accuracy for classifiers, \
         mae and rmse for regressors); NaN while the window holds no labels."
    );
    metrics::describe_gauge!(QUALITY_LABELS, "Labelled rows in the quality window.");
}

/// What a version predicts, so that a label can be scored against it.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// `classes` names the class indices (may be empty when the card lists none).
    Classification {
        classes: Vec<String>,
    },
    Regression,
}

impl Task {
    /// The task from the model card (`task`, `classes` in metadata.json); without a card's word,
    /// an integer output or a float output with several columns per row means a classifier.
    pub fn from_card(task: Option<&str>, classes: Vec<String>, outputs: &[TensorSpec]) -> Task {
        let classifier = match task.map(str::to_ascii_lowercase) {
            Some(t) if t.contains("classif") => true,
            Some(t) if t.contains("regress") => false,
            _ => outputs.iter().any(|o| {
                is_integer(o.datatype) || (is_float(o.datatype) && multi_column(&o.shape))
            }),
        };
        if classifier {
            Task::Classification { classes }
        } else {
            Task::Regression
        }
    }
}

fn is_integer(d: DataType) -> bool {
    matches!(
        d,
        DataType::Uint8
            | DataType::Uint16
            | DataType::Uint32
            | DataType::Uint64
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
    )
}

fn is_float(d: DataType) -> bool {
    matches!(d, DataType::Fp16 | DataType::Fp32 | DataType::Fp64)
}

/// More than one element per row: a known product over the non-batch dimensions above 1, or a
/// variable one (a row of unknown width is not a single value).
fn multi_column(shape: &[i64]) -> bool {
    let rest = shape.get(1..).unwrap_or(&[]);
    // Declared shapes come from the model file: a product too large for i64 is many columns.
    rest.iter().any(|&d| d < 0)
        || rest
            .iter()
            .try_fold(1i64, |acc, &d| acc.checked_mul(d))
            .is_none_or(|n| n > 1)
}

/// One prediction per row of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Predictions {
    /// Predicted class indices (-1 where no class could be read, which no label matches).
    Labels(Vec<i64>),
    Values(Vec<f64>),
}

impl Predictions {
    pub fn rows(&self) -> usize {
        match self {
            Predictions::Labels(v) => v.len(),
            Predictions::Values(v) => v.len(),
        }
    }
}

/// Rows along the first dimension (a 0-d tensor is one row).
fn rows_of(t: &Tensor) -> usize {
    match t.shape.first() {
        Some(&d) => usize::try_from(d).unwrap_or(0),
        None => 1,
    }
}

/// The first element of each row as i64, when the tensor holds integers that fit.
fn first_ints(t: &Tensor) -> Option<Vec<i64>> {
    fn col<T: Copy>(v: &[T], rows: usize, f: impl Fn(T) -> Option<i64>) -> Option<Vec<i64>> {
        let width = v.len().checked_div(rows)?;
        if width == 0 {
            return None;
        }
        v.chunks_exact(width).map(|row| f(row[0])).collect()
    }
    let rows = rows_of(t);
    match &t.data {
        TensorData::Uint8(v) => col(v, rows, |x| Some(i64::from(x))),
        TensorData::Uint16(v) => col(v, rows, |x| Some(i64::from(x))),
        TensorData::Uint32(v) => col(v, rows, |x| Some(i64::from(x))),
        TensorData::Uint64(v) => col(v, rows, |x| i64::try_from(x).ok()),
        TensorData::Int8(v) => col(v, rows, |x| Some(i64::from(x))),
        TensorData::Int16(v) => col(v, rows, |x| Some(i64::from(x))),
        TensorData::Int32(v) => col(v, rows, |x| Some(i64::from(x))),
        TensorData::Int64(v) => col(v, rows, Some),
        _ => None,
    }
}

/// The float elements of a tensor as f64 with their row width.
fn float_rows(t: &Tensor) -> Option<(Vec<f64>, usize)> {
    let values: Vec<f64> = match &t.data {
        TensorData::Fp16(v) => v.iter().map(|x| f64::from(x.to_f32())).collect(),
        TensorData::Fp32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Fp64(v) => v.clone(),
        _ => return None,
    };
    let width = values.len().checked_div(rows_of(t))?;
    (width > 0).then_some((values, width))
}

/// The index of each row's largest value (NaN never wins; a row of NaN gives -1).
fn arg_max(values: &[f64], width: usize) -> Vec<i64> {
    values
        .chunks_exact(width)
        .map(|row| {
            let mut best: Option<(usize, f64)> = None;
            for (i, &x) in row.iter().enumerate() {
                if !x.is_nan() && best.is_none_or(|(_, b)| x > b) {
                    best = Some((i, x));
                }
            }
            best.and_then(|(i, _)| i64::try_from(i).ok()).unwrap_or(-1)
        })
        .collect()
}

/// What the outputs of one request predicted, per row. A classifier: the first integer output
/// (the label), else the first string output matched against the card's class names, else the
/// arg-max of the first float output with several columns. A regressor: the first float output
/// (the first column of each row). `None` when the outputs say nothing usable.
pub fn predictions(task: &Task, outputs: &[Tensor]) -> Option<Predictions> {
    let found = match task {
        Task::Classification { classes } => outputs
            .iter()
            .find_map(first_ints)
            .or_else(|| outputs.iter().find_map(|t| class_names(t, classes)))
            .or_else(|| {
                outputs.iter().find_map(|t| {
                    float_rows(t)
                        .filter(|(_, width)| *width > 1)
                        .map(|(v, width)| arg_max(&v, width))
                })
            })
            .map(Predictions::Labels),
        Task::Regression => outputs.iter().find_map(float_rows).map(|(v, width)| {
            Predictions::Values(v.chunks_exact(width).map(|row| row[0]).collect())
        }),
    };
    found.filter(|p| p.rows() > 0)
}

/// Class indices of a BYTES label output, by the card's class names (-1 for a name not listed).
fn class_names(t: &Tensor, classes: &[String]) -> Option<Vec<i64>> {
    let TensorData::Bytes(strings) = &t.data else {
        return None;
    };
    if classes.is_empty() || strings.len() != rows_of(t) {
        return None;
    }
    Some(
        strings
            .iter()
            .map(|s| {
                classes
                    .iter()
                    .position(|c| c.as_bytes() == s)
                    .and_then(|i| i64::try_from(i).ok())
                    .unwrap_or(-1)
            })
            .collect(),
    )
}

/// Quality over the window at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QualitySummary {
    /// Labelled rows (classification labels plus regression targets).
    pub labels: u64,
    /// Classification rows predicted right.
    pub correct: u64,
    pub accuracy: Option<f64>,
    pub mae: Option<f64>,
    pub rmse: Option<f64>,
}

impl QualitySummary {
    /// Sets `switchyard_model_quality{model,version,metric}` for the metrics the task has (NaN
    /// while the window holds none) and the labelled-rows gauge.
    pub fn publish(&self, task: &Task, model: &str, version: u64) {
        let version = version.to_string();
        let metrics: &[(&'static str, Option<f64>)] = match task {
            Task::Classification { .. } => &[("accuracy", self.accuracy)],
            Task::Regression => &[("mae", self.mae), ("rmse", self.rmse)],
        };
        for &(metric, value) in metrics {
            metrics::gauge!(QUALITY, "model" => model.to_string(), "version" => version.clone(),
                "metric" => metric)
            .set(value.unwrap_or(f64::NAN));
        }
        metrics::gauge!(QUALITY_LABELS, "model" => model.to_string(), "version" => version)
            .set(self.labels as f64);
    }
}

/// The counts of one slice of time.
#[derive(Debug, Clone, Copy, Default)]
struct Slice {
    /// `now_ms / slice_ms` of the slice these counts belong to.
    key: u64,
    labels: u64,
    correct: u64,
    n: u64,
    abs_sum: f64,
    sq_sum: f64,
}

/// The most slices one window keeps: a longer window gets wider slices, so memory stays bounded
/// whatever the configuration says.
const MAX_SLICES: u64 = 4096;

/// Labelled outcomes over a sliding window: a ring of per-slice counts keyed by `now_ms /
/// slice_ms`; a slot is reset when a newer slice reuses it, so old counts age out without a
/// sweeper. Each call holds the lock only to add or sum a few numbers.
#[derive(Debug)]
pub struct QualityWindow {
    slice_ms: u64,
    slices: Mutex<Vec<Slice>>,
}

impl QualityWindow {
    /// A window of `window` in slices of `slice` (a slice of at least 1 ms, at least one slice,
    /// at most 4096 slices: a finer request widens the slice).
    pub fn new(window: Duration, slice: Duration) -> Self {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut slice_ms = u64::try_from(slice.as_millis()).unwrap_or(u64::MAX).max(1);
        if window_ms.div_ceil(slice_ms) > MAX_SLICES {
            slice_ms = window_ms.div_ceil(MAX_SLICES);
        }
        let count = window_ms.div_ceil(slice_ms).max(1);
        let count = usize::try_from(count).unwrap_or(1);
        Self {
            slice_ms,
            slices: Mutex::new(vec![Slice::default(); count]),
        }
    }

    /// Adds to the slice of `now_ms` (dropped when that slice has already left the window).
    fn add(&self, now_ms: u64, f: impl FnOnce(&mut Slice)) {
        let key = now_ms / self.slice_ms;
        let mut slices = self.slices.lock().unwrap_or_else(|e| e.into_inner());
        let len = slices.len() as u64;
        let Some(slot) = usize::try_from(key % len)
            .ok()
            .and_then(|i| slices.get_mut(i))
        else {
            return;
        };
        if slot.key < key {
            *slot = Slice {
                key,
                ..Slice::default()
            };
        } else if slot.key > key {
            // A newer slice holds this slot: `now_ms` is older than the whole window.
            return;
        }
        f(slot);
    }

    /// Records `total` classification labels of which `correct` matched the prediction.
    pub fn record_labels(&self, correct: u64, total: u64, now_ms: u64) {
        self.add(now_ms, |s| {
            s.labels += total;
            s.correct += correct.min(total);
        });
    }

    /// Records `n` regression targets with the sums of their absolute and squared errors.
    pub fn record_errors(&self, abs_sum: f64, sq_sum: f64, n: u64, now_ms: u64) {
        self.add(now_ms, |s| {
            s.n += n;
            s.abs_sum += abs_sum;
            s.sq_sum += sq_sum;
        });
    }

    /// The totals of the slices within the window ending at `now_ms`.
    pub fn summary(&self, now_ms: u64) -> QualitySummary {
        let now_key = now_ms / self.slice_ms;
        let (mut labels, mut correct, mut n, mut abs_sum, mut sq_sum) =
            (0u64, 0u64, 0u64, 0.0, 0.0);
        {
            let slices = self.slices.lock().unwrap_or_else(|e| e.into_inner());
            let oldest = now_key.saturating_sub(slices.len() as u64 - 1);
            for s in slices
                .iter()
                .filter(|s| s.key >= oldest && s.key <= now_key)
            {
                labels += s.labels;
                correct += s.correct;
                n += s.n;
                abs_sum += s.abs_sum;
                sq_sum += s.sq_sum;
            }
        }
        QualitySummary {
            labels: labels + n,
            correct,
            accuracy: (labels > 0).then(|| correct as f64 / labels as f64),
            mae: (n > 0).then(|| abs_sum / n as f64),
            rmse: (n > 0).then(|| (sq_sum / n as f64).sqrt()),
        }
    }
}

/// Two-sided p-value of the pooled two-proportion z-test of `x1/n1` against `x2/n2` (e.g. the
/// accuracy of stable against candidate). `None` when a side has no trials, a count exceeds its
/// trials, or the pooled proportion is 0 or 1 (no variance: the test says nothing).
pub fn two_proportion_p_value(x1: u64, n1: u64, x2: u64, n2: u64) -> Option<f64> {
    if n1 == 0 || n2 == 0 || x1 > n1 || x2 > n2 {
        return None;
    }
    let (x1, n1, x2, n2) = (x1 as f64, n1 as f64, x2 as f64, n2 as f64);
    let pooled = (x1 + x2) / (n1 + n2);
    if pooled <= 0.0 || pooled >= 1.0 {
        return None;
    }
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    let z = (x1 / n1 - x2 / n2) / se;
    Some(libm::erfc(z.abs() / std::f64::consts::SQRT_2))
}

#[cfg(test)]
mod tests {
    #[test]
    fn huge_declared_shapes_do_not_overflow() {
        assert!(super::multi_column(&[-1, 1 << 40, 1 << 40]));
        assert!(!super::multi_column(&[-1, 1]));
        assert!(!super::multi_column(&[-1, 0, 1 << 62, 4]));
    }

    use super::*;
    use crate::core::tensor::ByteStrings;
    use half::f16;

    fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    fn classes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn the_card_decides_the_task() {
        let float_col = [spec("variable", DataType::Fp32, &[-1, 1])];
        assert_eq!(
            Task::from_card(Some("binary_classification"), classes(2), &float_col),
            Task::Classification {
                classes: classes(2)
            }
        );
        let label = [spec("label", DataType::Int64, &[-1])];
        assert_eq!(
            Task::from_card(Some("Regression"), vec![], &label),
            Task::Regression
        );
    }

    #[test]
    fn without_a_card_the_outputs_decide() {
        let cases = [
            (spec("label", DataType::Int64, &[-1]), true),
            (spec("probabilities", DataType::Fp32, &[-1, 3]), true),
            (spec("scores", DataType::Fp32, &[-1, -1]), true),
            (spec("variable", DataType::Fp32, &[-1, 1]), false),
            (spec("variable", DataType::Fp64, &[-1]), false),
            (spec("text", DataType::Bytes, &[-1, 4]), false),
        ];
        for (output, classifier) in cases {
            let task = Task::from_card(None, vec![], std::slice::from_ref(&output));
            assert_eq!(
                matches!(task, Task::Classification { .. }),
                classifier,
                "{output}"
            );
        }
        // A card naming neither task leaves it to the outputs.
        let task = Task::from_card(
            Some("ranking"),
            vec![],
            &[spec("label", DataType::Int32, &[-1])],
        );
        assert!(matches!(task, Task::Classification { .. }));
    }

    fn t(name: &str, shape: &[i64], data: TensorData) -> Tensor {
        Tensor::new(name, shape.to_vec(), data)
    }

    #[test]
    fn a_classifier_prefers_its_label_output() {
        let task = Task::Classification { classes: vec![] };
        let outputs = [
            t(
                "probabilities",
                &[2, 2],
                TensorData::Fp32(vec![0.9, 0.1, 0.2, 0.8]),
            ),
            t("label", &[2], TensorData::Int64(vec![1, 0])),
        ];
        assert_eq!(
            predictions(&task, &outputs),
            Some(Predictions::Labels(vec![1, 0]))
        );
        let uints = [t("label", &[2, 1], TensorData::Uint8(vec![3, 2]))];
        assert_eq!(
            predictions(&task, &uints),
            Some(Predictions::Labels(vec![3, 2]))
        );
    }

    #[test]
    fn a_classifier_without_labels_takes_the_arg_max() {
        let task = Task::Classification { classes: vec![] };
        let outputs = [
            t("single", &[3, 1], TensorData::Fp32(vec![5.0, 5.0, 5.0])),
            t(
                "probabilities",
                &[3, 3],
                TensorData::Fp64(vec![
                    0.1,
                    0.7,
                    0.2,
                    f64::NAN,
                    0.1,
                    0.3,
                    f64::NAN,
                    f64::NAN,
                    f64::NAN,
                ]),
            ),
        ];
        // NaN never wins; a row of NaN matches no class.
        assert_eq!(
            predictions(&task, &outputs),
            Some(Predictions::Labels(vec![1, 2, -1]))
        );
        let half = [t(
            "p",
            &[1, 2],
            TensorData::Fp16(vec![f16::from_f32(0.25), f16::from_f32(0.75)]),
        )];
        assert_eq!(
            predictions(&task, &half),
            Some(Predictions::Labels(vec![1]))
        );
    }

    #[test]
    fn string_labels_are_matched_to_the_card_classes() {
        let task = Task::Classification {
            classes: vec!["setosa".into(), "versicolor".into()],
        };
        let Ok(names) = ByteStrings::from_items(["versicolor", "setosa", "other"]) else {
            panic!("byte strings");
        };
        let outputs = [t("label", &[3], TensorData::Bytes(names))];
        assert_eq!(
            predictions(&task, &outputs),
            Some(Predictions::Labels(vec![1, 0, -1]))
        );
        // Without class names a string label says nothing.
        let bare = Task::Classification { classes: vec![] };
        assert_eq!(predictions(&bare, &outputs), None);
    }

    #[test]
    fn a_regressor_takes_the_first_column_of_its_first_float_output() {
        let task = Task::Regression;
        let outputs = [
            t("ids", &[2], TensorData::Int64(vec![7, 8])),
            t(
                "variable",
                &[2, 2],
                TensorData::Fp32(vec![1.5, 9.0, -2.0, 9.0]),
            ),
        ];
        assert_eq!(
            predictions(&task, &outputs),
            Some(Predictions::Values(vec![1.5, -2.0]))
        );
    }

    #[test]
    fn nothing_usable_gives_none() {
        let class = Task::Classification { classes: vec![] };
        let one_column = [t("score", &[2, 1], TensorData::Fp32(vec![0.1, 0.2]))];
        assert_eq!(predictions(&class, &one_column), None);
        let ints = [t("label", &[2], TensorData::Int64(vec![1, 0]))];
        assert_eq!(predictions(&Task::Regression, &ints), None);
        let empty = [t("variable", &[0, 1], TensorData::Fp32(vec![]))];
        assert_eq!(predictions(&Task::Regression, &empty), None);
        assert_eq!(predictions(&Task::Regression, &[]), None);
        let too_big = [t("label", &[1], TensorData::Uint64(vec![u64::MAX]))];
        assert_eq!(predictions(&class, &too_big), None);
    }

    #[test]
    fn accuracy_is_exact_over_the_window() {
        let w = QualityWindow::new(Duration::from_secs(600), Duration::from_secs(60));
        w.record_labels(7, 10, 1_000);
        w.record_labels(2, 5, 61_000);
        let s = w.summary(61_000);
        assert_eq!((s.labels, s.correct), (15, 9));
        assert_eq!(s.accuracy, Some(9.0 / 15.0));
        assert_eq!((s.mae, s.rmse), (None, None));
        assert_eq!(
            w.summary(0),
            QualitySummary {
                labels: 10,
                correct: 7,
                accuracy: Some(0.7),
                mae: None,
                rmse: None
            }
        );
    }

    #[test]
    fn mae_and_rmse_come_from_the_error_sums() {
        let w = QualityWindow::new(Duration::from_secs(60), Duration::from_secs(10));
        // Errors 1, -3 then 2: MAE 2, RMSE sqrt(14/3).
        w.record_errors(4.0, 10.0, 2, 5_000);
        w.record_errors(2.0, 4.0, 1, 15_000);
        let s = w.summary(20_000);
        assert_eq!(s.labels, 3);
        assert_eq!(s.accuracy, None);
        assert_eq!(s.mae, Some(2.0));
        assert_eq!(s.rmse, Some((14.0f64 / 3.0).sqrt()));
    }

    #[test]
    fn old_slices_leave_the_window() {
        // Six slices of 10 s: the window at t covers slices (t/10s - 5) ..= t/10s.
        let w = QualityWindow::new(Duration::from_secs(60), Duration::from_secs(10));
        w.record_labels(1, 1, 0);
        w.record_labels(0, 1, 55_000);
        assert_eq!(w.summary(59_999).labels, 2);
        assert_eq!(w.summary(60_000).labels, 1);
        // A slot reused by a newer slice forgets the old counts.
        w.record_labels(1, 4, 60_500);
        let s = w.summary(60_500);
        assert_eq!((s.labels, s.correct), (5, 1));
        assert_eq!(w.summary(200_000).labels, 0);
        assert_eq!(w.summary(200_000).accuracy, None);
    }

    #[test]
    fn a_record_older_than_the_window_is_dropped() {
        let w = QualityWindow::new(Duration::from_secs(60), Duration::from_secs(10));
        w.record_labels(1, 1, 70_000);
        // Slice 1 maps to the same slot as slice 7, which is newer.
        w.record_labels(1, 100, 10_000);
        let s = w.summary(70_000);
        assert_eq!((s.labels, s.correct), (1, 1));
        // correct never exceeds total.
        w.record_labels(9, 2, 70_000);
        assert_eq!(w.summary(70_000).correct, 3);
    }

    #[test]
    fn degenerate_windows_are_clamped() {
        let zero = QualityWindow::new(Duration::ZERO, Duration::ZERO);
        zero.record_labels(1, 1, 5);
        assert_eq!(zero.summary(5).labels, 1);
        assert_eq!(zero.summary(6).labels, 0);
        let fine = QualityWindow::new(Duration::from_secs(86_400), Duration::from_millis(1));
        assert!(fine.slices.lock().map(|s| s.len()).unwrap_or(0) <= MAX_SLICES as usize);
        fine.record_labels(1, 2, 1_000);
        assert_eq!(fine.summary(1_000 + 86_000_000).labels, 2);
    }

    #[test]
    fn two_proportion_test_matches_known_values() {
        let p = two_proportion_p_value(45, 100, 60, 100).unwrap_or(f64::NAN);
        assert!((p - 0.033_672_07).abs() < 1e-7, "{p}");
        // Symmetric in the two sides.
        assert_eq!(two_proportion_p_value(60, 100, 45, 100), Some(p));
        let p = two_proportion_p_value(880, 1000, 850, 1000).unwrap_or(f64::NAN);
        assert!((p - 0.049_640_39).abs() < 1e-7, "{p}");
        let p = two_proportion_p_value(1, 2, 0, 3).unwrap_or(f64::NAN);
        assert!((p - 0.170_903_52).abs() < 1e-7, "{p}");
        assert_eq!(two_proportion_p_value(50, 100, 100, 200), Some(1.0));
    }

    #[test]
    fn two_proportion_test_refuses_what_it_cannot_judge() {
        assert_eq!(two_proportion_p_value(0, 0, 5, 10), None);
        assert_eq!(two_proportion_p_value(5, 10, 0, 0), None);
        assert_eq!(two_proportion_p_value(0, 10, 0, 20), None);
        assert_eq!(two_proportion_p_value(10, 10, 20, 20), None);
        assert_eq!(two_proportion_p_value(11, 10, 5, 20), None);
    }

    #[test]
    fn publish_sets_the_task_metrics() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let w = QualityWindow::new(Duration::from_secs(60), Duration::from_secs(10));
            w.record_labels(3, 4, 0);
            let class = Task::Classification { classes: vec![] };
            w.summary(0).publish(&class, "iris", 1);
            QualitySummary::default().publish(&Task::Regression, "diabetes", 2);
        });
        let text = handle.render();
        for line in [
            r#"switchyard_model_quality{model="iris",version="1",metric="accuracy"} 0.75"#,
            r#"switchyard_model_quality_labels{model="iris",version="1"} 4"#,
            r#"switchyard_model_quality{model="diabetes",version="2",metric="mae"} NaN"#,
            r#"switchyard_model_quality{model="diabetes",version="2",metric="rmse"} NaN"#,
            r#"switchyard_model_quality_labels{model="diabetes",version="2"} 0"#,
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert!(!text.contains(r#"model="iris",version="1",metric="mae""#));
    }
}
