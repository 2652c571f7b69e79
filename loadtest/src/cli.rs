//! Command line of `switchyard-loadtest`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::target::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestEncoding {
    /// Tensors as JSON arrays (`data`).
    Json,
    /// Triton's binary tensor extension, for inputs and outputs.
    Binary,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "switchyard-loadtest",
    version,
    about = "Load generator for Open Inference Protocol (KServe V2) servers: Switchyard, Triton, KServe, MLServer...",
    long_about = "Load generator for Open Inference Protocol (KServe V2) servers.\n\n\
        Drives one or more servers, one after another with the same settings, and reports \
        throughput and latency percentiles (HdrHistogram), errors by kind, and the CPU time of the \
        load generator (and optionally of each server). With several targets it prints their \
        ratios against the first, the only numbers that are stable on a shared machine.\n\n\
        Examples:\n  \
        switchyard-loadtest --target sy=http://127.0.0.1:8000 --model mlp_small --concurrency 32 --duration 15s\n  \
        switchyard-loadtest --target json=http://127.0.0.1:8000 --target bin=binary+http://127.0.0.1:8000 \
        --target grpc=grpc://127.0.0.1:8001 --model breast_cancer --rate 2000 --plot out.svg\n  \
        switchyard-loadtest --target tls=https://localhost:8443 --ca-cert ca.pem --token-file token \
        --model mlp_small"
)]
pub struct Args {
    /// A server to test, as NAME=URL. URL is http://HOST:PORT (REST; tensors encoded as --encoding
    /// says), json+http:// or binary+http:// (REST with that encoding), or grpc://HOST:PORT.
    /// Over TLS: https://, json+https://, binary+https://, grpcs:// (see --ca-cert).
    /// Repeat to compare servers or protocols in one run; ratios are against the first.
    #[arg(long = "target", required = true, value_parser = Target::parse)]
    pub targets: Vec<Target>,

    /// Model to call.
    #[arg(long)]
    pub model: String,

    /// Model version; empty means the server's default.
    #[arg(long, default_value = "")]
    pub model_version: String,

    /// Tensor encoding for plain http:// targets.
    #[arg(long, value_enum, default_value = "json")]
    pub encoding: RestEncoding,

    /// Closed loop: this many callers, each sending its next request as soon as the previous
    /// answer arrives.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,

    /// Open loop: send this many requests per second whatever the answers. Latency is measured
    /// from each request's intended send time, so queueing is not hidden (no coordinated omission).
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,

    /// Connections per target. REST default: one per caller (closed loop) or 64 (open loop);
    /// gRPC default: 1 (requests are multiplexed on HTTP/2).
    #[arg(long)]
    pub connections: Option<usize>,

    /// Rows per request: the first dimension of every input.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,

    /// Measured time per target (e.g. 15s, 500ms, 2m).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Stop each target after this many measured requests (and at --duration at the latest).
    #[arg(long)]
    pub requests: Option<u64>,

    /// Warm-up per target before measuring, same settings, not counted.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Per-request timeout; a request taking longer counts as a "timeout" error.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Seed of the random inputs (generated from the model's metadata).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Distinct request bodies to generate and cycle through.
    #[arg(long, default_value_t = 64)]
    pub variants: usize,

    /// Rows to send instead of random ones: a JSON array of rows (arrays of numbers) for a model
    /// with one input. Rows are taken in order, --batch per request, cycling.
    #[arg(long, conflicts_with = "request_file")]
    pub rows: Option<PathBuf>,

    /// A complete V2 JSON inference request to send (its inputs are re-encoded for binary and
    /// gRPC targets); no model metadata is fetched.
    #[arg(long)]
    pub request_file: Option<PathBuf>,

    /// Bearer token sent with every request to every target (REST `Authorization` header, gRPC
    /// `authorization` metadata), for a server started with --infer-token-file.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// File holding the token: its first line that is not empty or a `#` comment. Wins over
    /// --token and SWITCHYARD_TOKEN.
    #[arg(long)]
    pub token_file: Option<PathBuf>,

    /// PEM CA certificate(s) to verify https:// and grpcs:// targets with (default: the
    /// system's roots).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,

    /// NAME=PID: count the CPU time of process PID (and its children) as target NAME's.
    #[arg(long = "server-pid", value_parser = parse_pid)]
    pub server_pids: Vec<(String, u32)>,

    /// Print the results as one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,

    /// Write latency percentiles and throughput over time, per target, to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Parses `15s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 15s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        "us" => v / 1e6,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use us, ms, s or m)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("'{s}' is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}': expected NAME=PID"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("'{s}': PID must be a number"))?;
    Ok((name.to_string(), pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn every_option_is_documented() {
        use clap::CommandFactory;
        let cmd = Args::command();
        for arg in cmd.get_arguments() {
            if arg.get_id() == "help" || arg.get_id() == "version" {
                continue;
            }
            assert!(
                arg.get_help().is_some(),
                "--{} has no help text",
                arg.get_id()
            );
        }
    }
}
