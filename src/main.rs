use std::process::ExitCode;

use clap::Parser;
use switchyard::cli::{Cli, Command};
use switchyard::logging::LogFormat;

/// mimalloc rather than glibc's malloc: requests allocate many small, short-lived buffers across
/// threads (decoded tensors, replies), where glibc spent ~12% of the server's CPU (issue 13).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// NVIDIA's libraries use TF32 for FP32 matrix products unless told not to; ONNX Runtime's own
/// `use_tf32 = 0` (set too, in runtime/onnx.rs) did not stop it: on an H200, mlp_mid's outputs
/// still differed from the CPU path's by up to 1e-3, and by 1e-6 with this variable. A serving
/// path must not change answers with the device, so it is off unless the operator sets it.
const TF32_OVERRIDE: &str = "NVIDIA_TF32_OVERRIDE";

fn main() -> ExitCode {
    if std::env::var_os(TF32_OVERRIDE).is_none() {
        // SAFETY: the first statement of main, before any thread exists (no runtime, no logger),
        // so nothing reads the environment concurrently.
        unsafe { std::env::set_var(TF32_OVERRIDE, "0") };
    }
    let cli = Cli::parse();
    let log_format = cli.log_format;
    switchyard::logging::init(log_format);
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
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => switchyard::server::run(*args).await,
            admin => switchyard::admin::run(admin).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One report: a structured log line for JSON logs, plain text on stderr otherwise.
            match log_format {
                LogFormat::Json => tracing::error!("{e}"),
                LogFormat::Text => eprintln!("error: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}
