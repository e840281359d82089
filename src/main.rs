//! The `legate` command line (SPEC §1).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use legate::bootstrap::{bootstrap_yaml, BootstrapOptions};

/// See Cargo.toml: measured faster for the rate-limit service.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "legate", version, about = "Declarative API gateway policy, served to stock Envoy over ADS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Load DIR, serve ADS and the admin API, watch DIR and push every valid change.
    Serve {
        #[arg(long, default_value = "./config")]
        config: PathBuf,
        #[arg(long, default_value = "0.0.0.0:18000")]
        xds_addr: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:18001")]
        admin_addr: SocketAddr,
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Redis for global rate-limit counters shared by legate replicas
        /// (e.g. redis://127.0.0.1:6379); without it they count in memory.
        #[arg(long)]
        redis_url: Option<String>,
        /// Collect every proxy's access log here, as JSON lines (`-` for
        /// stdout): every request is logged, unless the policy says
        /// `defaults.access_log: off`.
        #[arg(long)]
        access_log: Option<String>,
        /// Where the aggregator answers Envoy's `aggregations` requests.
        #[arg(long, default_value = "127.0.0.1:18002")]
        aggregator_addr: SocketAddr,
    },
    /// Check DIR; print every error as FILE:LINE:COL: message.
    Validate {
        #[arg(long, default_value = "./config")]
        config: PathBuf,
        /// Fail (exit 1) on warnings too: a route that can never match, and the like.
        #[arg(long)]
        strict: bool,
    },
    /// Print the JSON Schema of the policy format, for editors.
    Schema {
        /// The schema of gateway test files (`*.gateway.yaml`) instead.
        #[arg(long)]
        tests: bool,
    },
    /// Show what applying DIR would add, remove and change, per Envoy
    /// resource, against a running legate or another folder; exit 0 when
    /// nothing would change, 2 when something would.
    Plan {
        #[arg(long, default_value = "./config")]
        config: PathBuf,
        /// The running legate's admin API to compare with.
        #[arg(long, default_value = "127.0.0.1:18001", conflicts_with = "against")]
        admin_addr: String,
        /// Compare with this folder instead of a running legate.
        #[arg(long)]
        against: Option<PathBuf>,
    },
    /// Print the Envoy resources a node of a cluster would receive.
    Render {
        #[arg(long, default_value = "./config")]
        config: PathBuf,
        #[arg(long, default_value = "default")]
        node_cluster: String,
        #[arg(long, value_enum, default_value = "yaml")]
        format: Format,
    },
    /// Run gateway test files (`*.gateway.yaml`) against a real local Envoy
    /// fed from DIR, with echo upstreams standing in for every service;
    /// exit 0 when every case passes.
    Test {
        #[arg(long, default_value = "./config")]
        config: PathBuf,
        /// Test files, or folders to find `*.gateway.yaml` in (default: DIR).
        files: Vec<PathBuf>,
        /// Also write the results as JUnit XML here, for CI.
        #[arg(long)]
        junit: Option<PathBuf>,
    },
    /// Print an Envoy bootstrap that connects to legate over ADS.
    Bootstrap {
        #[arg(long)]
        node_id: String,
        #[arg(long, default_value = "default")]
        node_cluster: String,
        /// legate's xDS address; repeat for several replicas.
        #[arg(long, default_value = "127.0.0.1:18000")]
        xds_addr: Vec<String>,
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
        /// legate's aggregator; repeat for several replicas. Default: each
        /// --xds-addr host on port 18002.
        #[arg(long)]
        aggregator_addr: Vec<String>,
        /// Incremental (delta) xDS.
        #[arg(long)]
        delta: bool,
    },
    /// serve + a local Envoy (+ demo upstreams with --demo), all on this machine.
    Up {
        #[arg(long, default_value = "./config")]
        config: PathBuf,
        /// Also start echo upstreams on the ports of the policy's services
        /// (each answers with the request it got, as JSON), so the gateway
        /// answers with nothing else running.
        #[arg(long)]
        demo: bool,
        #[arg(long, default_value = "127.0.0.1:18000")]
        xds_addr: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:18001")]
        admin_addr: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:18002")]
        aggregator_addr: SocketAddr,
        #[arg(long, default_value_t = 9901)]
        envoy_admin_port: u16,
        /// Envoy speaks incremental (delta) xDS.
        #[arg(long)]
        delta: bool,
    },
    /// The fleet as a terminal table: config version, last reload, each
    /// proxy's ACKed versions and last NACK, and the routes.
    Status {
        #[arg(long, default_value = "127.0.0.1:18001")]
        admin_addr: String,
    },
    /// Convert another gateway's configuration to legate policy.
    Import {
        #[command(subcommand)]
        from: Import,
    },
    /// A JSON echo upstream for demos and tests.
    Echo {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value = "echo")]
        name: String,
        /// Answer every request with this status (for resilience tests).
        #[arg(long)]
        status: Option<u16>,
        /// Answer the first N requests with 503 (for retry tests).
        #[arg(long, default_value_t = 0)]
        fail_first: u64,
        /// Wait this many milliseconds before every answer (a slow service).
        #[arg(long, default_value_t = 0)]
        delay: u64,
    },
}

#[derive(Subcommand)]
enum Import {
    /// A Kong declarative config (`_format_version` 1.1, 2.1 or 3.0) to
    /// legate policy YAML on stdout.
    Kong {
        file: PathBuf,
        /// Write what converts, with a comment for each setting left out,
        /// instead of failing on the first file with such settings.
        #[arg(long)]
        partial: bool,
    },
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_env("LEGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal (and not with NO_COLOR): a log written to a
    // file or piped to a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("legate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config, xds_addr, admin_addr, log_format, redis_url, access_log, aggregator_addr } => {
            init_logs(log_format);
            let opts = legate::serve::ServeOptions {
                config_dir: config,
                xds_addr,
                admin_addr,
                redis_url,
                access_log,
                aggregator_addr,
            };
            let rt = runtime()?;
            let served = rt.block_on(legate::serve::serve(opts, legate::serve::shutdown_signal()));
            // Don't wait on the file watcher's and other blocking threads.
            rt.shutdown_timeout(std::time::Duration::from_millis(200));
            served?;
        }
        Command::Schema { tests: false } => print!("{}", legate::policy::schema()),
        Command::Schema { tests: true } => print!("{}", legate::gateway_test::cases::schema()),
        Command::Plan { config, admin_addr, against } => {
            let side = |dir: &Path| {
                legate::policy::load_dir(dir).map(|p| {
                    print_warnings(&p.warnings);
                    let s = legate::translate::translate(&p);
                    legate::plan::Side {
                        resources: legate::render::view_json(s.all()),
                        fleets: Some(s.fleets().clone()),
                    }
                })
            };
            let proposed = match side(&config) {
                Ok(s) => s,
                Err(diags) => {
                    eprintln!("{diags}");
                    eprintln!("{}: not valid; nothing to plan", config.display());
                    return Ok(ExitCode::FAILURE);
                }
            };
            let current = match against {
                Some(dir) => match side(&dir) {
                    Ok(s) => s,
                    Err(diags) => {
                        eprintln!("{diags}");
                        eprintln!("{}: not valid; nothing to compare with", dir.display());
                        return Ok(ExitCode::FAILURE);
                    }
                },
                None => legate::plan::Side { resources: fetch_json(&admin_addr, "/api/config")?, fleets: None },
            };
            let plan = legate::plan::plan(&current, &proposed);
            print!("{}", legate::plan::render(&plan));
            return Ok(if plan.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) });
        }
        Command::Validate { config, strict } => match legate::policy::load_dir(&config) {
            Ok(p) => {
                print_warnings(&p.warnings);
                if strict && !p.warnings.is_empty() {
                    eprintln!("{} warning(s), and --strict fails on warnings", p.warnings.len());
                    return Ok(ExitCode::FAILURE);
                }
                let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
                println!(
                    "{}: valid ({}, {}, {})",
                    config.display(),
                    count(p.listeners.len(), "listener"),
                    count(p.services.len(), "service"),
                    count(p.routes.len(), "route")
                );
            }
            Err(diags) => {
                println!("{diags}");
                eprintln!("{} error(s); nothing would be applied", diags.0.len());
                return Ok(ExitCode::FAILURE);
            }
        },
        Command::Render { config, node_cluster, format } => match legate::watch::load(&config) {
            Ok(snapshot) => {
                let view = snapshot.view(&node_cluster);
                match format {
                    Format::Yaml => print!("{}", legate::render::view_yaml(&view)),
                    Format::Json => println!("{}", serde_json::to_string_pretty(&legate::render::view_json(&view))?),
                }
            }
            Err(diags) => {
                eprintln!("{diags}");
                return Ok(ExitCode::FAILURE);
            }
        },
        Command::Bootstrap { node_id, node_cluster, xds_addr, admin_port, aggregator_addr, delta } => {
            let xds_addrs =
                xds_addr.iter().map(|a| parse_host_port("--xds-addr", a)).collect::<anyhow::Result<Vec<_>>>()?;
            let aggregator_addrs = if aggregator_addr.is_empty() {
                xds_addrs.iter().map(|(h, _)| (h.clone(), legate::aggregator::DEFAULT_PORT)).collect()
            } else {
                aggregator_addr
                    .iter()
                    .map(|a| parse_host_port("--aggregator-addr", a))
                    .collect::<anyhow::Result<Vec<_>>>()?
            };
            let opts = BootstrapOptions { node_id, node_cluster, xds_addrs, aggregator_addrs, admin_port, delta };
            print!("{}", bootstrap_yaml(&opts));
        }
        Command::Up { config, demo, xds_addr, admin_addr, aggregator_addr, envoy_admin_port, delta } => {
            init_logs(LogFormat::Text);
            let opts = legate::up::UpOptions {
                config_dir: config,
                demo,
                xds_addr,
                admin_addr,
                aggregator_addr,
                envoy_admin_port,
                delta,
            };
            runtime()?.block_on(legate::up::up(opts))?;
        }
        Command::Test { config, files, junit } => {
            if std::env::var_os("LEGATE_LOG").is_some() {
                init_logs(LogFormat::Text);
            }
            let opts = legate::gateway_test::TestOptions { config_dir: config, files, junit };
            let outcome = runtime()?.block_on(legate::gateway_test::run(&opts, &mut std::io::stdout()))?;
            return Ok(match outcome {
                legate::gateway_test::Outcome::Ran(results) => {
                    if legate::gateway_test::report::counts(&results).1 == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                legate::gateway_test::Outcome::Invalid(diags) => {
                    for d in &diags {
                        println!("{d}");
                    }
                    eprintln!("{} error(s); no test ran", diags.len());
                    ExitCode::FAILURE
                }
            });
        }
        Command::Status { admin_addr } => {
            let doc = fetch_json(&admin_addr, "/api/status")?;
            print!("{}", legate::status::table(&doc));
        }
        Command::Import { from: Import::Kong { file, partial } } => match legate::policy::import_kong(&file, partial) {
            Ok(yaml) => print!("{yaml}"),
            Err(diags) => {
                // On stderr: `legate import kong kong.yaml > gateway.yaml`
                // must not fill the file with them.
                eprintln!("{diags}");
                eprintln!(
                    "{} problem(s) converting it; nothing was written (--partial writes the rest)",
                    diags.0.len()
                );
                return Ok(ExitCode::FAILURE);
            }
        },
        Command::Echo { listen, name, status, fail_first, delay } => {
            init_logs(LogFormat::Text);
            let opts =
                legate::echo::EchoOptions { name, status, fail_first, delay: std::time::Duration::from_millis(delay) };
            runtime()?.block_on(legate::echo::serve(listen, opts, legate::serve::shutdown_signal()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A valid policy's warnings, on stderr, as `FILE:LINE:COL: warning: message`.
fn print_warnings(warnings: &[legate::policy::Diagnostic]) {
    for w in warnings {
        eprintln!("{}:{}:{}: warning: {}", w.file, w.line, w.column, w.message);
    }
}

/// `GET path` (`/api/status`, `/api/config`) from a running legate's admin
/// API, as JSON (a plain HTTP/1.1 request: the admin API is local and needs
/// no client library).
fn fetch_json(admin_addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(admin_addr)
        .with_context(|| format!("cannot reach legate's admin API at {admin_addr} (is `legate serve` running?)"))?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(conn, "GET {path} HTTP/1.1\r\nhost: {admin_addr}\r\nconnection: close\r\n\r\n")?;
    let mut raw = String::new();
    conn.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("not an HTTP answer")?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "legate answered: {}", head.lines().next().unwrap_or(""));
    serde_json::from_str(body).with_context(|| format!("{path} is not JSON"))
}

fn parse_host_port(flag: &str, s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s.rsplit_once(':').with_context(|| format!("{flag} `{s}` is not HOST:PORT"))?;
    let port = port.parse().with_context(|| format!("{flag} `{s}` has no valid port"))?;
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}
