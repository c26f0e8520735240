//! `hubsim serve`: the hub over real sockets, as ag2's `serve_ws`, with what a long-running hub
//! needs (API keys, keepalive, a connection cap, a hello deadline, logs, graceful shutdown).

use clap::ValueEnum;
use hubsim::disk::{DiskStore, DiskSync, SyncPolicy};
use hubsim::hub::link::AuthConfig;
use hubsim::hub::{Hub, HubConfig};
use hubsim::net::{Durability, ServeOptions};
use hubsim::server::HubServer;
use hubsim::sim::live::{LiveOptions, LiveTap};
use hubsim::sim::scenario::FaultPlan;
use hubsim::time::Instant;
use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The environment variable that may hold the API keys instead of `--api-keys FILE`.
pub(crate) const API_KEYS_ENV: &str = "HUBSIM_API_KEYS";

/// `hubsim serve`'s arguments.
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// The address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port to bind (0 picks a free one).
    #[arg(long)]
    port: u16,
    /// Bind a non-loopback host even though the hub accepts unauthenticated clients.
    #[arg(long)]
    allow_unauthenticated: bool,
    /// Agents' API keys, one `name=token` per line (`#` comments, blank lines allowed). With
    /// keys the hub takes only the `api_key` auth scheme. The environment variable
    /// HUBSIM_API_KEYS may hold the same lines instead (or `name=token` pairs separated by
    /// commas).
    #[arg(long, value_name = "FILE")]
    api_keys: Option<PathBuf>,
    /// Seconds between keepalive pings to each connection (`500ms`, `1m` also work); 0: none.
    #[arg(long, value_name = "TIME", default_value = "20", value_parser = parse_duration)]
    ping_interval: Duration,
    /// Seconds a ping may go unanswered before the connection is closed with 1011; 0: no limit.
    #[arg(long, value_name = "TIME", default_value = "20", value_parser = parse_duration)]
    ping_timeout: Duration,
    /// Connections at once; more are accepted and closed at once with 1013.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_connections: usize,
    /// Seconds a connection has to bind an agent (a welcomed hello or a `register`) before it
    /// is closed with 1008; 0: no limit.
    #[arg(long, value_name = "TIME", default_value = "30", value_parser = parse_duration)]
    hello_timeout: Duration,
    /// Seconds `create_channel` waits for every invitee's ack.
    #[arg(long, value_name = "TIME", default_value = "30", value_parser = parse_duration)]
    invite_ack_timeout: Duration,
    /// Seconds between sweeps that expire channels past their TTL; 0: never.
    #[arg(long, value_name = "TIME", default_value = "30", value_parser = parse_duration)]
    ttl_sweep_interval: Duration,
    /// Seconds between sweeps of turn expectations (`reply_within`, `max_silence`); 0: never.
    #[arg(long, value_name = "TIME", default_value = "10", value_parser = parse_duration)]
    expectation_sweep_interval: Duration,
    /// Keep the hub in DIR, in ag2's store layout: a hub restarted on it goes on with its
    /// agents, channels, WALs, tasks, cursors and ids. DIR is created if missing; one hub at a
    /// time may use it.
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// With --store: write the store at most TIME after a change (`100ms`, `1`, ...), or
    /// `always` (also `0`): after every input, before its answers leave. A clean stop (SIGINT,
    /// SIGTERM) writes everything either way.
    #[arg(long, value_name = "TIME|always", default_value = "100ms", value_parser = parse_sync)]
    sync: SyncPolicy,
    /// Worker threads for the connections' tasks, the owner loop staying on its own; 0: every
    /// task on the owner's thread (measured fairer, `hubsim bench-serve`), large answers still
    /// encoded on a blocking thread.
    #[arg(long, value_name = "N", default_value_t = 0, hide = true)]
    socket_threads: usize,
    /// What to log to stderr: one line per connection opened, closed or refused at `info`.
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,
    /// Inject the faults of FILE (the scenario format's timed faults and `chaos`) into the
    /// connections of the agents they name, at offsets from the start.
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,
    /// The seed of the fault file's `chaos` draws and latencies.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Record the run: at shutdown, write its event log as DIR/timeline.txt and
    /// DIR/report.html, check the invariants a recording can judge, and print each violation
    /// with its events (the exit status is then 1).
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
}

/// `--log-level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn filter(self) -> tracing_subscriber::filter::LevelFilter {
        use tracing_subscriber::filter::LevelFilter;
        match self {
            LogLevel::Off => LevelFilter::OFF,
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

/// A duration on the command line: seconds, or `500ms`, `2m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    hubsim::sim::scenario::duration_seconds(text)
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .ok_or_else(|| format!("`{text}` is not a duration: expected e.g. 20, 1.5, 500ms, 2m"))
}

/// `--sync`: `always`, `0`, or a duration.
fn parse_sync(text: &str) -> Result<SyncPolicy, String> {
    if text == "always" {
        return Ok(SyncPolicy::Always);
    }
    let period = parse_duration(text).map_err(|_| {
        format!("`{text}` is not `always` or a duration: expected e.g. always, 0, 100ms, 1")
    })?;
    Ok(if period.is_zero() {
        SyncPolicy::Always
    } else {
        SyncPolicy::Every(period)
    })
}

/// The store's hook for the owner loop.
type Store = Box<dyn Durability>;

/// The hub, rebuilt from the store in `dir` when there is one, and the store's hook.
fn open_store(
    config: HubConfig,
    dir: Option<&Path>,
    sync: SyncPolicy,
) -> Result<(Hub, Option<Store>), Box<dyn Error>> {
    let Some(dir) = dir else {
        return Ok((Hub::new(config, Instant(0)), None));
    };
    let opened = DiskStore::open(dir)?;
    for path in &opened.torn {
        tracing::warn!(file = %path.display(), "the last line was cut short (a crash while writing); left out");
    }
    let hub = Hub::hydrate(config, &opened.store, opened.id_floor, Instant(0))
        .map_err(|error| format!("{}: the store does not rebuild: {error}", dir.display()))?;
    tracing::info!(
        store = %dir.display(),
        new = opened.fresh,
        agents = opened.store.agent_ids().count(),
        channels = opened.store.channels().len(),
        ?sync,
        "store opened"
    );
    Ok((hub, Some(Box::new(DiskSync::new(opened.disk, sync)))))
}

/// A duration, or `None` for zero (off).
fn unless_zero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Reads API keys: `name=token` (or `name token`) per line, `#` comments and blank lines
/// skipped; with `commas`, commas separate entries too. Names and tokens are trimmed.
///
/// # Errors
/// A line without a token, an empty name or token, a name given twice, or no key at all;
/// messages never quote a token.
pub(crate) fn parse_api_keys(
    text: &str,
    origin: &str,
    commas: bool,
) -> Result<BTreeMap<String, String>, String> {
    let mut keys = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let entries: Vec<&str> = if commas {
            line.split(',').collect()
        } else {
            vec![line]
        };
        for entry in entries {
            let entry = entry.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let at = format!("{origin}:{}", number + 1);
            // The name ends at the first `=` or space; one `=` may follow the spaces.
            let Some(end) = entry.find(|c: char| c == '=' || c.is_whitespace()) else {
                return Err(format!("{at}: expected `name=token`"));
            };
            let rest = entry[end..].trim_start();
            let token = rest.strip_prefix('=').unwrap_or(rest).trim();
            let name = &entry[..end];
            if name.is_empty() || token.is_empty() {
                return Err(format!("{at}: expected `name=token` with neither empty"));
            }
            if keys.insert(name.to_string(), token.to_string()).is_some() {
                return Err(format!("{at}: a second key for `{name}`"));
            }
        }
    }
    if keys.is_empty() {
        return Err(format!("{origin}: no API keys"));
    }
    Ok(keys)
}

/// The API keys from `--api-keys FILE` or `HUBSIM_API_KEYS`, if either is given.
fn api_keys(file: Option<&Path>) -> Result<Option<BTreeMap<String, String>>, Box<dyn Error>> {
    let env = std::env::var(API_KEYS_ENV).ok();
    match (file, env) {
        (Some(_), Some(_)) => {
            Err(format!("both --api-keys and {API_KEYS_ENV} are set: use one").into())
        }
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("{}: {error}", path.display()))?;
            warn_if_readable_by_others(path);
            Ok(Some(parse_api_keys(
                &text,
                &path.display().to_string(),
                false,
            )?))
        }
        (None, Some(text)) => Ok(Some(parse_api_keys(&text, API_KEYS_ENV, true)?)),
        (None, None) => Ok(None),
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path) {
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "the API keys file is readable by others (chmod 600)");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    biased;
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                    _ = terminate.recv() => tracing::info!("SIGTERM received"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the hub");
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("SIGINT received");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("SIGINT received");
    }
}

/// `hubsim serve`: the hub over real sockets until SIGINT or SIGTERM. Its hub clock starts at
/// the current wall time.
pub(crate) fn serve(args: ServeArgs) -> Result<ExitCode, Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_max_level(args.log_level.filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let keys = api_keys(args.api_keys.as_deref())?;
    let auth = match keys {
        Some(keys) => AuthConfig {
            no_auth: false,
            api_keys: Some(keys),
        },
        None => AuthConfig::default(),
    };
    let config = HubConfig {
        invite_ack_timeout_micros: micros(args.invite_ack_timeout),
        ttl_sweep_interval_micros: micros(args.ttl_sweep_interval),
        expectation_sweep_interval_micros: micros(args.expectation_sweep_interval),
        auth,
        ..HubConfig::default()
    };
    hubsim::net::check_exposure(&args.host, config.auth.no_auth, args.allow_unauthenticated)?;
    if config.auth.no_auth && args.allow_unauthenticated {
        tracing::warn!(host = %args.host, "serving without authentication: any client can act as any agent");
    }
    let options = ServeOptions {
        ping_interval: unless_zero(args.ping_interval),
        ping_timeout: unless_zero(args.ping_timeout),
        max_connections: Some(args.max_connections),
        hello_timeout: unless_zero(args.hello_timeout),
        fair: true,
    };
    let plan = match (&args.faults, &args.record) {
        (Some(path), _) => Some(FaultPlan::load(path)?),
        (None, Some(_)) => Some(FaultPlan::default()),
        (None, None) => None,
    };
    let since_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let epoch = hubsim::time::Timestamp {
        micros: i64::try_from(since_unix.as_micros())?,
        offset_seconds: 0,
    };
    let scheme = if config.auth.no_auth {
        "none"
    } else {
        "api_key"
    };
    let keys = config.auth.api_keys.as_ref().map_or(0, BTreeMap::len);
    let ttl_sweep = config.ttl_sweep_interval_micros;
    let (hub, durability) = open_store(config, args.store.as_deref(), args.sync)?;
    // The owner loop runs on this thread (`block_on`), with the connections' tasks unless
    // `--socket-threads` gives them worker threads.
    let runtime = match args.socket_threads {
        0 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        threads => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?,
    };
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
        eprintln!("hubsim: serving on ws://{}/", listener.local_addr()?);
        tracing::info!(
            address = %listener.local_addr()?,
            auth = scheme,
            keys,
            ?options,
            "serving"
        );
        let server = HubServer::new(hub);
        let shutdown = shutdown_signal();
        let Some(plan) = plan else {
            hubsim::net::serve_durable(listener, server, epoch, options, shutdown, durability)
                .await?;
            tracing::info!("stopped");
            return Ok(ExitCode::SUCCESS);
        };
        if !plan.faults.is_empty() || plan.chaos.is_some() {
            tracing::info!(
                faults = plan.faults.len(),
                chaos = plan.chaos.is_some(),
                seed = args.seed,
                "injecting faults"
            );
        }
        let live = LiveOptions {
            plan,
            seed: args.seed,
            record: args.record.clone(),
            epoch,
            ttl_sweep,
        };
        let (tap, outcome) = LiveTap::new(live);
        let extras = hubsim::net::ws::Extras {
            tap: Some(Box::new(tap)),
            durability,
        };
        hubsim::net::serve_extended(listener, server, epoch, options, extras, shutdown).await?;
        tracing::info!("stopped");
        let outcome = outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if args.record.is_none() {
            return Ok(ExitCode::SUCCESS);
        }
        eprint!("{}", hubsim::sim::live::describe(&outcome));
        if outcome.error.is_some() || outcome.violations > 0 {
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::parse_api_keys;

    #[test]
    fn api_keys_files_read_name_token_lines() {
        let text = "# agents\nalice=k-alice\n\nbob   k bob \n carol = k=carol\n";
        let keys = parse_api_keys(text, "keys", false).expect("parses");
        let pairs: Vec<(&str, &str)> = keys.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        assert_eq!(
            pairs,
            [("alice", "k-alice"), ("bob", "k bob"), ("carol", "k=carol")]
        );
        let keys = parse_api_keys("alice=a, bob=b", "env", true).expect("parses");
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn api_keys_files_refuse_what_they_cannot_read() {
        for (text, error) in [
            ("alice\n", "keys:1: expected `name=token`"),
            (
                "alice=\n",
                "keys:1: expected `name=token` with neither empty",
            ),
            ("alice=a\nalice=b\n", "keys:2: a second key for `alice`"),
            ("# none\n", "keys: no API keys"),
        ] {
            assert_eq!(parse_api_keys(text, "keys", false), Err(error.to_string()));
        }
    }
}
