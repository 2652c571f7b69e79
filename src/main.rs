use std::process::ExitCode;

use clap::Parser;
use switchyard::cli::{Cli, Command};
use switchyard::logging::LogFormat;

fn main() -> ExitCode {
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
