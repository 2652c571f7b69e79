//! `switchyard-loadtest`: drives Open Inference Protocol servers and reports throughput and
//! latency percentiles. See `--help`.

/// The load generator shares the server's cores: a cheaper allocator leaves more of them to the
/// server under test.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod client;
mod cpu;
mod payload;
mod plot;
mod report;
mod run;
mod secure;
mod stats;
mod target;

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("inference");
}

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use cli::{Args, RestEncoding};
use client::Endpoint;
use payload::Body;
use report::Summary;
use run::{Mode, Plan};
use secure::Security;
use target::{Protocol, Target};

fn protocol_of(t: &Target, args: &Args) -> Protocol {
    t.protocol.unwrap_or(match args.encoding {
        RestEncoding::Json => Protocol::RestJson,
        RestEncoding::Binary => Protocol::RestBinary,
    })
}

async fn bodies(
    endpoint: &Arc<Endpoint>,
    protocol: Protocol,
    args: &Args,
) -> Result<Vec<Body>, String> {
    let sets = if let Some(path) = &args.request_file {
        vec![payload::read_request_file(path)?]
    } else {
        let specs = client::fetch_inputs(
            endpoint,
            protocol == Protocol::Grpc,
            &args.model,
            &args.model_version,
            args.timeout,
        )
        .await?;
        if specs.is_empty() {
            return Err(format!(
                "the metadata of model '{}' lists no inputs (some servers leave it empty); \
                 give the request with --request-file",
                args.model
            ));
        }
        let rows = args.rows.as_deref().map(payload::read_rows).transpose()?;
        payload::input_sets(
            &specs,
            rows.as_deref(),
            args.batch,
            args.variants,
            args.seed,
        )?
    };
    Ok(sets
        .iter()
        .map(|inputs| payload::encode(protocol, &args.model, &args.model_version, inputs))
        .collect())
}

fn progress(args: &Args, label: String, duration: Duration) -> Option<ProgressBar> {
    if args.quiet || args.json {
        return None;
    }
    let bar = ProgressBar::new(duration.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>22} [{bar:30}] {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label);
    Some(bar)
}

async fn run_target(
    t: &Target,
    args: &Args,
    security: &Security,
) -> Result<(Summary, Option<plot::Series>), String> {
    let protocol = protocol_of(t, args);
    let endpoint = Arc::new(Endpoint::new(t, protocol == Protocol::Grpc, security)?);
    let bodies = Arc::new(bodies(&endpoint, protocol, args).await?);
    let mode = match args.rate {
        Some(r) => Mode::Open(r),
        None => Mode::Closed(args.concurrency.max(1)),
    };
    let connections = args.connections.unwrap_or(match (protocol, mode) {
        (Protocol::Grpc, _) => 1,
        (_, Mode::Closed(n)) => n,
        (_, Mode::Open(_)) => 64,
    });
    let mut plan = Plan {
        protocol,
        endpoint: endpoint.clone(),
        path: client::infer_path(&args.model, &args.model_version),
        bodies,
        mode,
        connections,
        timeout: args.timeout,
        keep_samples: false,
    };
    if !args.warmup.is_zero() {
        let bar = progress(args, format!("{} warm-up", t.name), args.warmup);
        run::run(&plan, args.warmup, None, bar.clone()).await?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    }
    plan.keep_samples = args.plot.is_some();
    let server_pid = args
        .server_pids
        .iter()
        .find(|(n, _)| n == &t.name)
        .map(|(_, p)| *p);
    let server_before = server_pid.and_then(cpu::process_tree_seconds);
    let client_before = cpu::own_seconds();
    let bar = progress(args, t.name.clone(), args.duration);
    let measured = run::run(&plan, args.duration, args.requests, bar.clone()).await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let client_cpu = cpu::own_seconds() - client_before;
    let server_cpu = match (
        server_before,
        server_pid.and_then(cpu::process_tree_seconds),
    ) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let mode_text = match mode {
        Mode::Closed(n) => format!("closed loop, {n} callers"),
        Mode::Open(r) => format!("open loop, {r} req/s"),
    };
    let summary = Summary::new(
        &t.name,
        protocol.to_string(),
        endpoint.url(),
        mode_text,
        args.batch,
        &measured.stats,
        measured.elapsed.as_secs_f64(),
        client_cpu,
        server_cpu,
    );
    let series = measured.stats.samples.map(|samples| plot::Series {
        name: t.name.clone(),
        samples,
    });
    Ok((summary, series))
}

async fn run_all(args: Args) -> Result<(), String> {
    let mut summaries = Vec::new();
    let mut series = Vec::new();
    let security = Security::from_args(&args)?;
    for t in &args.targets {
        let (summary, s) = run_target(t, &args, &security)
            .await
            .map_err(|e| format!("target '{}': {e}", t.name))?;
        summaries.push(summary);
        series.extend(s);
    }
    if let Some(path) = &args.plot {
        plot::write_svg(path, &series, args.duration.as_secs_f32())?;
    }
    if args.json {
        let doc = serde_json::json!({
            "model": args.model,
            "model_version": args.model_version,
            "batch": args.batch,
            "duration_s": args.duration.as_secs_f64(),
            "warmup_s": args.warmup.as_secs_f64(),
            "results": summaries,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report::tables(&summaries));
        if let Some(path) = &args.plot {
            println!("\nplot written to {}", path.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_all(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
