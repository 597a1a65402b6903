//! The `rushhour-burst` command: parses the command line, runs one scenario (on a
//! current-thread runtime, or `burst` on its own threads), prints the table (and
//! writes the JSON).

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;

use rushhour_burst::cli::{Cli, Command};
use rushhour_burst::scenario;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `burst` runs its own threads, each with its own runtime.
    if let Command::Burst(args) = &cli.command {
        return match scenario::burst::run(args) {
            Ok(report) => finish(&report.table(), report.ok, &report, args.json.as_deref()),
            Err(e) => fail(&e),
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rushhour-burst: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let local = tokio::task::LocalSet::new();
    match cli.command {
        Command::Fanout(args) => match local.block_on(&runtime, scenario::fanout::run(&args)) {
            Ok(report) => finish(&report.table(), report.ok, &report, args.json.as_deref()),
            Err(e) => fail(&e),
        },
        Command::Publish(args) => match local.block_on(&runtime, scenario::publish::run(&args)) {
            Ok(report) => finish(&report.table(), report.ok, &report, args.json.as_deref()),
            Err(e) => fail(&e),
        },
        Command::Burst(_) => unreachable!("handled above"),
    }
}

/// Prints the table, writes the JSON if asked: 0 when the run passed its checks, 1
/// when it did not, 2 when the JSON cannot be written.
fn finish(table: &str, ok: bool, report: &impl Serialize, json: Option<&Path>) -> ExitCode {
    print!("{table}");
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report).expect("the report serializes");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("rushhour-burst: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The run could not start.
fn fail(e: &str) -> ExitCode {
    eprintln!("rushhour-burst: {e}");
    ExitCode::from(2)
}
