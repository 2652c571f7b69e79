//! A version's `baseline.json`: the training distribution of each input feature (and, when the
//! training script recorded them, of each output), against which serving traffic is compared.
//!
//! Parsing goes through a permissive raw shape first and then validates it, so every problem is
//! reported with the file and the feature it concerns rather than as a serde position.

use std::collections::HashSet;

use serde::Deserialize;

/// More features than this is a baseline no one meant to monitor per feature: each one becomes
/// several Prometheus series.
pub const MAX_FEATURES: usize = 4096;

/// How far the proportions of a distribution may sum from 1 (JSON floats written by numpy).
pub const SUM_TOLERANCE: f64 = 1e-6;

/// Why a baseline (or a profiler built from one) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("{origin}: not a valid baseline: {source}")]
    Json {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{origin}: {problem}")]
    Baseline { origin: String, problem: String },
    #[error("{origin}: feature '{feature}': {problem}")]
    Feature {
        origin: String,
        feature: String,
        problem: String,
    },
}

/// Whether a feature is one of the model's inputs or one of its outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureKind {
    Input,
    Output,
}

/// The training distribution of one feature.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// numpy's histogram: bin `i` holds `edges[i] <= x < edges[i+1]`, the last bin also
    /// `x == edges[last]`.
    Numeric {
        bin_edges: Vec<f64>,
        proportions: Vec<f64>,
    },
    Categorical {
        values: Vec<String>,
        proportions: Vec<f64>,
    },
}

impl Distribution {
    pub fn proportions(&self) -> &[f64] {
        match self {
            Self::Numeric { proportions, .. } | Self::Categorical { proportions, .. } => {
                proportions
            }
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Numeric { .. } => "numeric",
            Self::Categorical { .. } => "categorical",
        }
    }
}

/// One feature: column `index` of each row of tensor `tensor`.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineFeature {
    /// The name as written in the file (no `output:` prefix).
    pub name: String,
    pub kind: FeatureKind,
    /// The tensor holding the feature: the baseline's `input` for inputs, `output` for outputs.
    pub tensor: String,
    pub index: usize,
    pub count: Option<u64>,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub distribution: Distribution,
}

impl BaselineFeature {
    /// The name used in reports and metric labels: inputs plain, outputs as `output:<name>`.
    pub fn label(&self) -> String {
        match self.kind {
            FeatureKind::Input => self.name.clone(),
            FeatureKind::Output => format!("output:{}", self.name),
        }
    }
}

/// A validated `baseline.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// Where it was read from, for error messages (a path, usually).
    pub origin: String,
    /// The input tensor the input features are columns of.
    pub input: String,
    /// Training rows the statistics were computed over.
    pub rows: Option<u64>,
    pub features: Vec<BaselineFeature>,
    /// Empty for baselines written before outputs were recorded.
    pub outputs: Vec<BaselineFeature>,
}

#[derive(Deserialize)]
struct RawBaseline {
    input: Option<String>,
    rows: Option<u64>,
    features: Option<Vec<RawFeature>>,
    #[serde(default)]
    outputs: Vec<RawFeature>,
}

#[derive(Deserialize)]
struct RawFeature {
    name: Option<String>,
    output: Option<String>,
    index: Option<u64>,
    #[serde(rename = "type")]
    kind: Option<String>,
    count: Option<u64>,
    mean: Option<f64>,
    std: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    histogram: Option<RawHistogram>,
    values: Option<Vec<serde_json::Value>>,
    proportions: Option<Vec<f64>>,
}

#[derive(Deserialize)]
struct RawHistogram {
    bin_edges: Option<Vec<f64>>,
    proportions: Option<Vec<f64>>,
}

impl Baseline {
    /// Parses and validates `bytes`; `origin` (a path, say) names the file in every error.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Baseline, BaselineError> {
        let raw: RawBaseline =
            serde_json::from_slice(bytes).map_err(|source| BaselineError::Json {
                origin: origin.to_string(),
                source,
            })?;
        let whole = |problem: String| BaselineError::Baseline {
            origin: origin.to_string(),
            problem,
        };
        let input = match raw.input {
            Some(s) if !s.is_empty() => s,
            Some(_) => return Err(whole("\"input\" is empty".into())),
            None => {
                return Err(whole(
                    "\"input\" (the input tensor's name) is missing".into(),
                ));
            }
        };
        let raw_features = raw
            .features
            .ok_or_else(|| whole("\"features\" is missing".into()))?;
        if raw_features.is_empty() {
            return Err(whole("\"features\" is empty".into()));
        }
        let total = raw_features.len() + raw.outputs.len();
        if total > MAX_FEATURES {
            return Err(whole(format!(
                "{total} features (inputs and outputs) is over the limit of {MAX_FEATURES}"
            )));
        }
        let mut labels = HashSet::with_capacity(total);
        let mut convert = |raw: Vec<RawFeature>, kind: FeatureKind, section: &str| {
            let mut out = Vec::with_capacity(raw.len());
            for (i, f) in raw.into_iter().enumerate() {
                let feature = validate_feature(f, kind, &input, origin, section, i)?;
                if !labels.insert(feature.label()) {
                    return Err(BaselineError::Feature {
                        origin: origin.to_string(),
                        feature: feature.label(),
                        problem: "the name is used by another feature".into(),
                    });
                }
                out.push(feature);
            }
            Ok(out)
        };
        let features = convert(raw_features, FeatureKind::Input, "features")?;
        let outputs = convert(raw.outputs, FeatureKind::Output, "outputs")?;
        Ok(Baseline {
            origin: origin.to_string(),
            input,
            rows: raw.rows,
            features,
            outputs,
        })
    }

    /// Input features, then output features.
    pub fn all_features(&self) -> impl Iterator<Item = &BaselineFeature> {
        self.features.iter().chain(&self.outputs)
    }
}

fn validate_feature(
    f: RawFeature,
    kind: FeatureKind,
    input: &str,
    origin: &str,
    section: &str,
    position: usize,
) -> Result<BaselineFeature, BaselineError> {
    let name = match f.name {
        Some(n) if !n.is_empty() => n,
        _ => {
            return Err(BaselineError::Baseline {
                origin: origin.to_string(),
                problem: format!("{section}[{position}] has no \"name\""),
            });
        }
    };
    let label = match kind {
        FeatureKind::Input => name.clone(),
        FeatureKind::Output => format!("output:{name}"),
    };
    let err = |problem: String| BaselineError::Feature {
        origin: origin.to_string(),
        feature: label.clone(),
        problem,
    };
    let tensor = match (kind, f.output) {
        (FeatureKind::Input, None) => input.to_string(),
        (FeatureKind::Input, Some(o)) => {
            return Err(err(format!(
                "an input feature names output '{o}'; output features belong under \"outputs\""
            )));
        }
        (FeatureKind::Output, Some(o)) if !o.is_empty() => o,
        (FeatureKind::Output, _) => {
            return Err(err(
                "\"output\" (the output tensor's name) is missing or empty".into(),
            ));
        }
    };
    let index = f
        .index
        .ok_or_else(|| err("\"index\" (the column within the tensor's row) is missing".into()))?;
    let index =
        usize::try_from(index).map_err(|_| err(format!("\"index\" {index} is too large")))?;
    let distribution = match f.kind.as_deref() {
        Some("numeric") => {
            let h = f
                .histogram
                .ok_or_else(|| err("a numeric feature needs \"histogram\"".into()))?;
            let bin_edges = h
                .bin_edges
                .ok_or_else(|| err("\"histogram\" has no \"bin_edges\"".into()))?;
            let proportions = h
                .proportions
                .ok_or_else(|| err("\"histogram\" has no \"proportions\"".into()))?;
            if bin_edges.len() < 2 {
                return Err(err(format!(
                    "\"bin_edges\" has {} edges; a histogram needs at least 2",
                    bin_edges.len()
                )));
            }
            if let Some(i) = bin_edges.iter().position(|e| !e.is_finite()) {
                return Err(err(format!("bin edge {i} is not finite")));
            }
            if let Some(i) = bin_edges.windows(2).position(|w| w[0] >= w[1]) {
                return Err(err(format!(
                    "bin edges are not strictly increasing: edge {} ({}) >= edge {} ({})",
                    i,
                    bin_edges[i],
                    i + 1,
                    bin_edges[i + 1]
                )));
            }
            if proportions.len() != bin_edges.len() - 1 {
                return Err(err(format!(
                    "{} proportions for {} bins ({} edges)",
                    proportions.len(),
                    bin_edges.len() - 1,
                    bin_edges.len()
                )));
            }
            check_proportions(&proportions).map_err(err)?;
            Distribution::Numeric {
                bin_edges,
                proportions,
            }
        }
        Some("categorical") => {
            let raw_values = f
                .values
                .ok_or_else(|| err("a categorical feature needs \"values\"".into()))?;
            let proportions = f
                .proportions
                .ok_or_else(|| err("a categorical feature needs \"proportions\"".into()))?;
            if raw_values.is_empty() {
                return Err(err("\"values\" is empty".into()));
            }
            let mut values = Vec::with_capacity(raw_values.len());
            for (i, v) in raw_values.into_iter().enumerate() {
                // numpy writes class labels as strings, but a hand-written file may use numbers.
                match v {
                    serde_json::Value::String(s) => values.push(s),
                    serde_json::Value::Number(n) => values.push(n.to_string()),
                    serde_json::Value::Bool(b) => values.push(b.to_string()),
                    other => {
                        return Err(err(format!(
                            "value {i} is {other}; values are strings (or numbers)"
                        )));
                    }
                }
            }
            let mut seen = HashSet::with_capacity(values.len());
            if let Some(dup) = values.iter().find(|v| !seen.insert(v.as_str())) {
                return Err(err(format!("value '{dup}' is listed twice")));
            }
            let mut numbers: Vec<f64> = values.iter().filter_map(|v| parse_number(v)).collect();
            numbers.sort_by(f64::total_cmp);
            if let Some(w) = numbers.windows(2).find(|w| w[0] == w[1]) {
                return Err(err(format!(
                    "two values are the same number ({}), so a numeric value could match either",
                    w[0]
                )));
            }
            if proportions.len() != values.len() {
                return Err(err(format!(
                    "{} proportions for {} values",
                    proportions.len(),
                    values.len()
                )));
            }
            check_proportions(&proportions).map_err(err)?;
            Distribution::Categorical {
                values,
                proportions,
            }
        }
        Some(other) => {
            return Err(err(format!(
                "\"type\" '{other}' is not \"numeric\" or \"categorical\""
            )));
        }
        None => return Err(err("\"type\" is missing".into())),
    };
    Ok(BaselineFeature {
        name,
        kind,
        tensor,
        index,
        count: f.count,
        mean: f.mean,
        std: f.std,
        min: f.min,
        max: f.max,
        distribution,
    })
}

fn check_proportions(p: &[f64]) -> Result<(), String> {
    if let Some(i) = p.iter().position(|x| !x.is_finite() || *x < 0.0) {
        return Err(format!(
            "proportion {i} ({}) is not a finite non-negative number",
            p[i]
        ));
    }
    let sum: f64 = p.iter().sum();
    if (sum - 1.0).abs() > SUM_TOLERANCE {
        return Err(format!("proportions sum to {sum}, not 1"));
    }
    Ok(())
}

/// A categorical value as a number, for matching numeric tensors: anything Rust parses as a
/// finite f64, plus `true`/`false` (a BOOL tensor's elements) as 1 and 0. `-0` is `0`.
pub fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    let x = match t {
        "true" | "True" => 1.0,
        "false" | "False" => 0.0,
        _ => t.parse::<f64>().ok()?,
    };
    x.is_finite().then_some(x + 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(name: &str, edges: &str, props: &str) -> String {
        format!(
            r#"{{"name": "{name}", "index": 0, "type": "numeric",
                "histogram": {{"bin_edges": {edges}, "proportions": {props}}}}}"#
        )
    }

    fn with_features(features: &[String]) -> String {
        format!(
            r#"{{"input": "X", "rows": 4, "features": [{}]}}"#,
            features.join(",")
        )
    }

    fn err_of(json: &str) -> String {
        match Baseline::parse(json.as_bytes(), "b.json") {
            Ok(_) => panic!("parsed: {json}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_inputs_and_outputs() {
        let json = r#"{"input": "X", "rows": 4,
            "features": [{"name": "a", "index": 1, "type": "numeric", "count": 4, "mean": 0.5,
                          "histogram": {"bin_edges": [0, 1, 2], "proportions": [0.25, 0.75]}}],
            "outputs": [{"name": "label", "output": "label", "index": 0, "type": "categorical",
                         "values": ["0", "1"], "proportions": [0.5, 0.5]}]}"#;
        let b = Baseline::parse(json.as_bytes(), "b.json").unwrap();
        assert_eq!(b.input, "X");
        assert_eq!(b.rows, Some(4));
        assert_eq!(b.features[0].tensor, "X");
        assert_eq!(b.features[0].index, 1);
        assert_eq!(b.features[0].mean, Some(0.5));
        assert_eq!(b.features[0].label(), "a");
        assert_eq!(b.outputs[0].tensor, "label");
        assert_eq!(b.outputs[0].label(), "output:label");
        assert_eq!(
            b.outputs[0].distribution,
            Distribution::Categorical {
                values: vec!["0".into(), "1".into()],
                proportions: vec![0.5, 0.5]
            }
        );
    }

    #[test]
    fn outputs_are_optional() {
        let b = Baseline::parse(
            with_features(&[numeric("a", "[0, 1]", "[1]")]).as_bytes(),
            "b.json",
        )
        .unwrap();
        assert!(b.outputs.is_empty());
    }

    #[test]
    fn the_models_baselines_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let mut parsed = 0;
        for model in std::fs::read_dir(&root).unwrap() {
            let path = model.unwrap().path().join("1").join("baseline.json");
            if !path.exists() {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let b = Baseline::parse(&bytes, &path.display().to_string())
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(!b.features.is_empty());
            parsed += 1;
        }
        assert!(parsed >= 3, "only {parsed} baselines found under {root:?}");
    }

    #[test]
    fn errors_name_the_file_and_the_feature() {
        let cases = [
            (
                with_features(&[numeric("a", "[0, 1, 1]", "[0.5, 0.5]")]),
                "feature 'a': bin edges are not strictly increasing",
            ),
            (
                with_features(&[numeric("a", "[0, 2, 1]", "[0.5, 0.5]")]),
                "not strictly increasing",
            ),
            (
                with_features(&[numeric("a", "[0, 1, 2]", "[1]")]),
                "feature 'a': 1 proportions for 2 bins",
            ),
            (
                with_features(&[numeric("a", "[0, 1, 2]", "[0.5, 0.4]")]),
                "feature 'a': proportions sum to",
            ),
            (
                with_features(&[numeric("a", "[0, 1, 2]", "[1.5, -0.5]")]),
                "proportion 1 (-0.5) is not a finite non-negative",
            ),
            (with_features(&[numeric("a", "[0]", "[]")]), "at least 2"),
            (
                with_features(&[numeric("a", "[0, 1]", "[1]"), numeric("a", "[0, 1]", "[1]")]),
                "feature 'a': the name is used by another feature",
            ),
            (
                with_features(&[r#"{"name": "c", "index": 0, "type": "categorical",
                    "values": ["x", "x"], "proportions": [0.5, 0.5]}"#
                    .to_string()]),
                "feature 'c': value 'x' is listed twice",
            ),
            (
                with_features(&[r#"{"name": "c", "index": 0, "type": "categorical",
                    "values": ["1", "1.0"], "proportions": [0.5, 0.5]}"#
                    .to_string()]),
                "same number",
            ),
            (
                with_features(&[r#"{"name": "c", "index": 0, "type": "ordinal"}"#.to_string()]),
                "feature 'c': \"type\" 'ordinal'",
            ),
            (
                with_features(&[r#"{"name": "c", "type": "numeric"}"#.to_string()]),
                "feature 'c': \"index\"",
            ),
            (
                r#"{"input": "X", "features": [], "outputs": []}"#.to_string(),
                "\"features\" is empty",
            ),
            (r#"{"features": []}"#.to_string(), "\"input\""),
            (
                r#"{"input": "X", "features": [{"name": "a", "index": 0, "type": "numeric",
                  "histogram": {"bin_edges": [0, 1], "proportions": [1]}}],
                  "outputs": [{"name": "y", "index": 0, "type": "numeric",
                  "histogram": {"bin_edges": [0, 1], "proportions": [1]}}]}"#
                    .to_string(),
                "feature 'output:y': \"output\"",
            ),
            ("not json".to_string(), "not a valid baseline"),
        ];
        for (json, want) in cases {
            let e = err_of(&json);
            assert!(e.starts_with("b.json: "), "{e}");
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }

    #[test]
    fn an_input_and_an_output_may_share_a_plain_name() {
        let json = r#"{"input": "X",
            "features": [{"name": "y", "index": 0, "type": "numeric",
                          "histogram": {"bin_edges": [0, 1], "proportions": [1]}}],
            "outputs": [{"name": "y", "output": "y", "index": 0, "type": "numeric",
                         "histogram": {"bin_edges": [0, 1], "proportions": [1]}}]}"#;
        assert!(Baseline::parse(json.as_bytes(), "b.json").is_ok());
    }

    #[test]
    fn too_many_features() {
        let features: Vec<String> = (0..=MAX_FEATURES)
            .map(|i| numeric(&format!("f{i}"), "[0, 1]", "[1]"))
            .collect();
        assert!(err_of(&with_features(&features)).contains("over the limit of 4096"));
    }

    #[test]
    fn numbers_in_categorical_values() {
        assert_eq!(parse_number("2"), Some(2.0));
        assert_eq!(parse_number("-0"), Some(0.0));
        assert!(parse_number("-0").unwrap().is_sign_positive());
        assert_eq!(parse_number("true"), Some(1.0));
        assert_eq!(parse_number("cat"), None);
        assert_eq!(parse_number("NaN"), None);
    }
}
