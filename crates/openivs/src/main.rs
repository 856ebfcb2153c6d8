//! The `openivs` command: `openivs serve` runs the server; `openivs keygen` and `openivs token`
//! make playback keys and tokens for private channels.

use clap::Parser;
use openivs::settings::{Cli, Command, LogFormat, Settings};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Serve(args) => *args,
        Command::Keygen(args) => return tool_result(openivs::playback_keys::keygen(&args)),
        Command::Token(args) => return tool_result(openivs::playback_keys::token(&args).map(|t| println!("{t}"))),
    };
    let settings = match Settings::resolve(args) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("openivs: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    fix_mmap_threshold();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("openivs: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(openivs::server::serve(settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn tool_result(result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("openivs: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Allocations of 128 KiB and more get pages of their own (mmap), returned whole when freed.
/// glibc starts there too but raises the threshold each time such a block is freed, up to
/// 32 MiB; after that a stream's large buffers (keyframe messages, parts, segment tables) come
/// from the heap, where the freed ones leave holes that the sliding playback window never
/// fills exactly. Measured (ingest benchmark, 50 streams, BENCHMARKS.md): RSS per stream 1.27x
/// the window floor with the moving threshold, 1.15x with it fixed. A threshold the operator
/// sets (`MALLOC_MMAP_THRESHOLD_`) is left as set.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets a malloc parameter; called before any thread is started.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}
