//! The standalone emulator binary: `atlassian-emulator --listen 127.0.0.1:9090`.

use clap::Parser;

/// Serve the Atlassian Cloud emulator until SIGINT or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "atlassian-emulator", version)]
struct Args {
    #[command(flatten)]
    serve: atlassian_emulator::ServeArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match atlassian_emulator::serve_forever(args.serve.config(), args.serve.listen).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("atlassian-emulator: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
