//! The `rushhour-burst` command: parses the command line, runs one scenario on a
//! current-thread runtime, prints the table (and writes the JSON).

use std::process::ExitCode;

use clap::Parser;

use rushhour_burst::cli::{Cli, Command};
use rushhour_burst::scenario;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            Ok(report) => {
                print!("{}", report.table());
                if let Some(path) = &args.json {
                    let json =
                        serde_json::to_string_pretty(&report).expect("the report serializes");
                    if let Err(e) = std::fs::write(path, json + "\n") {
                        eprintln!("rushhour-burst: cannot write {}: {e}", path.display());
                        return ExitCode::from(2);
                    }
                }
                if report.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("rushhour-burst: {e}");
                ExitCode::from(2)
            }
        },
    }
}
