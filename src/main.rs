//! The `atlassync` binary: parses arguments and hands over to the library.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    atlassync::cli::main().await
}
