//! `hubsim bench-serve` (hidden): how fair `hubsim serve` is. It starts `hubsim serve` as a
//! child on a loopback port, registers many agents, then measures one well-behaved client's
//! app-level ping round trips alone and while other clients loop `list_agents` over every
//! agent, and the server's resident memory per idle connection.

use futures_util::{SinkExt, StreamExt};
use std::error::Error;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;
type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// `hubsim bench-serve`'s arguments.
#[derive(clap::Args)]
pub(crate) struct BenchServeArgs {
    /// Agents to register before measuring.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Pings to time in each phase (after 100 untimed ones).
    #[arg(long, default_value_t = 2_000)]
    pings: usize,
    /// Flooding clients in each flood phase (repeat, or separate with commas).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    flooders: Vec<usize>,
    /// The `limit` of each flooder's `list_agents`.
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
    /// Idle connections to open for the memory figure (0: skip it).
    #[arg(long, default_value_t = 2_000)]
    idle_connections: usize,
    /// `hubsim serve --socket-threads` (its default if not given).
    #[arg(long)]
    socket_threads: Option<usize>,
    /// The flooders run in a child process at this `nice` level, so that on a small machine
    /// they take the CPU the way a remote attacker's machine would not; 0: the flooders'
    /// priority is the hub's.
    #[arg(long, default_value_t = 19)]
    flood_nice: u8,
    /// Milliseconds between one ping's answer and the next ping, so that a phase spans many
    /// `list_agents` calls.
    #[arg(long, default_value_t = 1)]
    ping_gap_ms: u64,
    /// Serve with this `hubsim` binary instead of this one (another build, to compare).
    #[arg(long, value_name = "PATH")]
    hub_binary: Option<std::path::PathBuf>,
    /// Internal: be the flooders' process, flooding this address until killed.
    #[arg(long, hide = true)]
    flood_at: Option<SocketAddr>,
}

/// A `hubsim serve` child, killed when dropped.
struct Hub {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Hub {
    fn start(args: &BenchServeArgs) -> BenchResult<Hub> {
        let threads = args.socket_threads.map(|n| n.to_string());
        let binary = match &args.hub_binary {
            Some(path) => path.clone(),
            None => std::env::current_exe()?,
        };
        let mut child = Command::new(binary)
            .args([
                "serve",
                "--port",
                "0",
                "--log-level",
                "off",
                "--hello-timeout",
                "0",
            ])
            .args(["--max-connections", "1000000"])
            .args(
                threads
                    .iter()
                    .flat_map(|n| ["--socket-threads", n.as_str()]),
            )
            .env_remove(crate::serve::API_KEYS_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stderr = BufReader::new(child.stderr.take().ok_or("no stderr")?);
        let mut line = String::new();
        stderr.read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("hubsim: serving on ws://")
            .and_then(|rest| rest.strip_suffix('/'))
            .ok_or_else(|| format!("unexpected first line of hubsim serve: {line:?}"))?
            .parse()?;
        // Keep reading stderr so that the child never blocks on it.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Ok(Hub { child, addr })
    }

    /// The child's resident set size in bytes (Linux).
    fn rss(&self) -> BenchResult<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .ok_or("no VmRSS in /proc/PID/status")?
            .trim()
            .parse::<u64>()?;
        Ok(kib * 1024)
    }
}

fn runtime() -> BenchResult<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn connect(addr: SocketAddr) -> BenchResult<Ws> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    // No size limit: a `list_agents` over thousands of agents is larger than the hub reads.
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream).await?;
    Ok(ws)
}

/// The next text message.
async fn text(ws: &mut Ws) -> BenchResult<String> {
    loop {
        match ws.next().await.ok_or("connection ended")?? {
            Message::Text(text) => return Ok(text.as_str().to_owned()),
            Message::Close(frame) => return Err(format!("closed by the hub: {frame:?}").into()),
            _ => {}
        }
    }
}

/// Registers `agents` agents on one connection, 256 requests in flight at most.
async fn register(addr: SocketAddr, agents: usize) -> BenchResult<()> {
    let mut ws = connect(addr).await?;
    let mut sent = 0;
    while sent < agents {
        let batch = (agents - sent).min(256);
        for i in sent..sent + batch {
            let request = serde_json::json!({
                "request_id": format!("r{i}"), "op": "register", "kind": "request",
                "params": {
                    "passport": {"name": format!("agent-{i:05}"), "auth": {"scheme": "none", "claim": {}}},
                    "resume": {"summary": format!("bench agent {i}")},
                },
            });
            ws.send(Message::text(request.to_string())).await?;
        }
        for _ in 0..batch {
            let answer = text(&mut ws).await?;
            if !answer.contains("\"ok\": true") {
                return Err(format!("register failed: {answer}").into());
            }
        }
        sent += batch;
    }
    ws.close(None).await?;
    Ok(())
}

/// Round trips of `pings` app-level pings, one at a time `gap` apart, after 100 untimed ones.
async fn ping(addr: SocketAddr, pings: usize, gap: Duration) -> BenchResult<Vec<Duration>> {
    let mut ws = connect(addr).await?;
    let mut times = Vec::with_capacity(pings);
    for i in 0..pings + 100 {
        let sent = Instant::now();
        ws.send(Message::text(r#"{"kind": "ping"}"#)).await?;
        let answer = text(&mut ws).await?;
        let took = sent.elapsed();
        if answer != r#"{"kind": "pong"}"# {
            return Err(format!("expected a pong, got {answer}").into());
        }
        if i >= 100 {
            times.push(took);
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
        }
    }
    ws.close(None).await?;
    Ok(times)
}

/// Loops `list_agents(limit)` until `stop`, one request at a time; counts the calls and the
/// bytes of the answers, and keeps each call's time.
async fn flood(
    addr: SocketAddr,
    limit: usize,
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
) -> BenchResult<(Vec<Duration>, usize)> {
    let mut ws = connect(addr).await?;
    let mut times = Vec::new();
    let mut bytes = 0;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let request = serde_json::json!({
            "request_id": format!("f{i}"), "op": "list_agents", "kind": "request",
            "params": {"limit": limit},
        });
        let sent = Instant::now();
        ws.send(Message::text(request.to_string())).await?;
        let answer = text(&mut ws).await?;
        let took = sent.elapsed();
        times.push(took);
        bytes = answer.len();
        {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{bytes} {}", took.as_micros())?;
            stdout.flush()?;
        }
        if !answer.contains("\"ok\": true") {
            return Err(format!("list_agents failed: {}", &answer[..answer.len().min(200)]).into());
        }
        calls.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
    let _ = ws.close(None).await;
    Ok((times, bytes))
}

/// p50, p90, p99 and max of `times`, in ms.
fn quantiles(times: &mut [Duration]) -> [f64; 4] {
    times.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len());
        times[rank - 1].as_secs_f64() * 1e3
    };
    [at(0.50), at(0.90), at(0.99), at(1.0)]
}

/// One phase's pings, with `flooders` clients looping `list_agents` meanwhile.
fn phase(addr: SocketAddr, args: &BenchServeArgs, flooders: usize) -> BenchResult<Phase> {
    let calls = Arc::new(AtomicU64::new(0));
    let mut flood = None;
    let mut counting = None;
    if flooders > 0 {
        let mut child = Command::new("nice")
            .args(["-n", &args.flood_nice.to_string()])
            .arg(std::env::current_exe()?)
            .args(["bench-serve", "--flood-at", &addr.to_string()])
            .args([
                "--flooders",
                &flooders.to_string(),
                "--limit",
                &args.limit.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let calls = Arc::clone(&calls);
        // One line per answer: its size and round trip in µs.
        counting = Some(std::thread::spawn(move || {
            let (mut times, mut bytes) = (Vec::new(), 0);
            for line in stdout.lines().map_while(Result::ok) {
                let mut words = line.split(' ').map(str::parse::<u64>);
                if let (Some(Ok(size)), Some(Ok(micros))) = (words.next(), words.next()) {
                    bytes = size as usize;
                    times.push(Duration::from_micros(micros));
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            }
            (times, bytes)
        }));
        flood = Some(FloodChild(child));
    }
    // The flood is on once every flooder had an answer.
    let started = Instant::now();
    while calls.load(Ordering::Relaxed) < flooders as u64 {
        if counting.as_ref().is_some_and(|t| t.is_finished())
            || started.elapsed() > Duration::from_secs(120)
        {
            return Err("the flooders did not get an answer".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = calls.load(Ordering::Relaxed);
    let pinging = Instant::now();
    let gap = Duration::from_millis(args.ping_gap_ms);
    let pings = runtime()?.block_on(ping(addr, args.pings, gap));
    let seconds = pinging.elapsed().as_secs_f64();
    let during = calls.load(Ordering::Relaxed) - before;
    drop(flood);
    let (mut flood_times, bytes) = match counting {
        Some(thread) => thread.join().map_err(|_| "the flood counter panicked")?,
        None => (Vec::new(), 0),
    };
    Ok(Phase {
        flooders,
        pings: quantiles(&mut pings?),
        calls: during,
        seconds,
        call: (!flood_times.is_empty()).then(|| quantiles(&mut flood_times)[0]),
        bytes,
    })
}

/// The flooders' process, killed when dropped.
struct FloodChild(Child);

impl Drop for FloodChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The flooders' process (`--flood-at`): `flooders` clients loop `list_agents` until killed,
/// each answer a line on stdout.
fn flood_until_killed(addr: SocketAddr, args: &BenchServeArgs) -> BenchResult<()> {
    let flooders = args.flooders.first().copied().unwrap_or(1);
    let threads: Vec<_> = (0..flooders)
        .map(|_| {
            let limit = args.limit;
            let (stop, calls) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicU64::new(0)),
            );
            std::thread::spawn(move || runtime()?.block_on(flood(addr, limit, stop, calls)))
        })
        .collect();
    for thread in threads {
        thread.join().map_err(|_| "a flooder panicked")??;
    }
    Ok(())
}

struct Phase {
    flooders: usize,
    pings: [f64; 4],
    /// `list_agents` answered while the pings ran, and for how long they ran.
    calls: u64,
    seconds: f64,
    /// The median `list_agents` round trip, ms.
    call: Option<f64>,
    /// The size of one `list_agents` answer.
    bytes: usize,
}

/// `hubsim bench-serve`.
pub(crate) fn bench_serve(args: BenchServeArgs) -> Result<ExitCode, Box<dyn Error>> {
    run(&args).map_err(|error| -> Box<dyn Error> { error.to_string().into() })?;
    Ok(ExitCode::SUCCESS)
}

fn run(args: &BenchServeArgs) -> BenchResult<()> {
    if let Some(addr) = args.flood_at {
        return flood_until_killed(addr, args);
    }
    let hub = Hub::start(args)?;
    let addr = hub.addr;
    let rt = runtime()?;
    let started = Instant::now();
    rt.block_on(register(addr, args.agents))?;
    out!(
        "hubsim serve on {addr}: {} agents registered in {:.2} s",
        args.agents,
        started.elapsed().as_secs_f64()
    );
    let mut phases = vec![phase(addr, args, 0)?];
    for &flooders in &args.flooders {
        phases.push(phase(addr, args, flooders)?);
    }
    let idle = phases[0].pings;
    out!(
        "{} pings per phase, {} ms apart; flooders loop list_agents(limit={}) at nice {}",
        args.pings,
        args.ping_gap_ms,
        args.limit,
        args.flood_nice
    );
    out!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>12} {:>14}",
        "flooders",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "p99/idle",
        "lists/s",
        "list p50 ms"
    );
    for phase in &phases {
        let [p50, p90, p99, max] = phase.pings;
        let (rate, call) = match phase.call {
            Some(call) => (
                format!("{:.1}", phase.calls as f64 / phase.seconds),
                format!("{call:.1}"),
            ),
            None => ("-".to_string(), "-".to_string()),
        };
        out!(
            "{:<10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.2} {:>12} {:>14}",
            phase.flooders,
            p50,
            p90,
            p99,
            max,
            p99 / idle[2],
            rate,
            call
        );
    }
    if let Some(phase) = phases.iter().find(|p| p.bytes > 0) {
        out!("one list_agents answer: {} bytes", phase.bytes);
    }
    if args.idle_connections > 0 {
        memory(&hub, &rt, args.idle_connections)?;
    }
    Ok(())
}

/// Opens `count` idle connections and reports the server's resident memory per connection.
fn memory(hub: &Hub, rt: &tokio::runtime::Runtime, count: usize) -> BenchResult<()> {
    std::thread::sleep(Duration::from_millis(500));
    let before = hub.rss()?;
    let idle = rt.block_on(async {
        let mut idle = Vec::with_capacity(count);
        for _ in 0..count {
            idle.push(connect(hub.addr).await?);
        }
        // Every connection answers: the hub has attached them all.
        let mut last = connect(hub.addr).await?;
        last.send(Message::text(r#"{"kind": "ping"}"#)).await?;
        text(&mut last).await?;
        idle.push(last);
        BenchResult::Ok(idle)
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let after = hub.rss()?;
    out!(
        "{} idle connections: RSS {:.1} MB -> {:.1} MB, {:.1} KB per connection",
        idle.len(),
        before as f64 / 1e6,
        after as f64 / 1e6,
        after.saturating_sub(before) as f64 / idle.len() as f64 / 1e3
    );
    drop(idle);
    Ok(())
}
