//! `kv-cluster node` processes on 127.0.0.1: found or built binary, free
//! ports, a run directory with each node's data and logs, signals (kill -9,
//! SIGSTOP/SIGCONT), bounded CLI runs, and every child killed on drop (on
//! panic too). The run directory is removed on drop unless the thread is
//! panicking or [`ProcessCluster::keep`] was called, so a failure leaves the
//! logs behind at the path the failure message names.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Error;
use super::proxy::Network;

/// Environment variable that names the `kv-cluster` binary to use instead
/// of the one next to the test executable.
pub const BINARY_ENV: &str = "QUORATE_KV_CLUSTER_BIN";

/// The `kv-cluster` example binary: [`example_binary`]`("kv-cluster",`
/// [`BINARY_ENV`]`)`.
pub fn binary() -> Result<PathBuf, Error> {
    example_binary("kv-cluster", BINARY_ENV)
}

/// The example binary `name` of the profile the running test was built
/// with: `target/<profile>/examples/<name>`, built with cargo if it is
/// missing or older than the test executable (`cargo test --test X` does
/// not build examples), unless the environment variable `env` names one.
/// Resolved once per name and process.
pub fn example_binary(name: &str, env: &str) -> Result<PathBuf, Error> {
    static BINARIES: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let mut found = BINARIES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    found
        .entry(name.to_owned())
        .or_insert_with(|| find_or_build(name, env).map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Binary)
}

fn find_or_build(name: &str, env: &str) -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| Error::Binary(format!("no profile directory above {}", exe.display())))?;
    let bin = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = match (modified(&bin), modified(&exe)) {
        (Some(b), Some(e)) => b >= e,
        _ => false,
    };
    if fresh {
        return Ok(bin);
    }
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "-p",
            "quorate-examples",
            "--example",
            name,
            "--profile",
        ])
        .arg(&profile);
    if let Some(target) = profile_dir.parent() {
        command.arg("--target-dir").arg(target);
    }
    let status = command.status()?;
    if !status.success() || !bin.exists() {
        return Err(Error::Binary(format!(
            "`cargo build -p quorate-examples --example {name} --profile {profile}` \
             ({status}) did not produce {}",
            bin.display()
        )));
    }
    Ok(bin)
}

/// A port on 127.0.0.1 nothing listened on a moment ago.
pub fn free_addr() -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Ids `1..=n`, each with a [`free_addr`].
pub fn free_addrs(n: u64) -> Result<Vec<(u64, SocketAddr)>, Error> {
    (1..=n).map(|id| Ok((id, free_addr()?))).collect()
}

/// A node for each of `addrs`, listening there and dialing the others
/// directly, with `extra` `node` arguments.
pub fn mesh_specs(addrs: &[(u64, SocketAddr)], extra: &[String]) -> Vec<NodeSpec> {
    addrs
        .iter()
        .map(|&(id, listen)| NodeSpec {
            id,
            listen,
            peers: addrs.iter().copied().filter(|&(p, _)| p != id).collect(),
            extra: extra.to_vec(),
        })
        .collect()
}

/// A fresh directory for one run: `<temp>/quorate-<name>-<pid>-<nanos>`.
pub fn run_dir(name: &str) -> Result<PathBuf, Error> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("quorate-{name}-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Formats `(id, addr)` pairs as the CLI's `id=addr,id=addr` list.
pub fn node_list(nodes: &[(u64, SocketAddr)]) -> String {
    nodes
        .iter()
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Sends `signal` (a `kill` argument such as `-STOP`) to process `pid`.
pub fn signal(pid: u32, signal: &str) -> Result<(), Error> {
    let status = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Io(std::io::Error::other(format!(
            "kill {signal} {pid}: {status}"
        ))))
    }
}

/// How one node process is started.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Its id.
    pub id: u64,
    /// Where it listens.
    pub listen: SocketAddr,
    /// The addresses it dials its peers at (their listen addresses, or
    /// proxies in front of them).
    pub peers: Vec<(u64, SocketAddr)>,
    /// More `node` arguments.
    pub extra: Vec<String>,
}

#[derive(Debug)]
struct NodeProcess {
    spec: NodeSpec,
    child: Option<Child>,
    paused: bool,
}

/// Node processes of one run, killed when dropped.
#[derive(Debug)]
pub struct ProcessCluster {
    bin: PathBuf,
    dir: PathBuf,
    nodes: BTreeMap<u64, NodeProcess>,
    keep: bool,
    /// The certificates directory, when the nodes run with `--tls-dir`.
    tls_dir: Option<PathBuf>,
}

impl ProcessCluster {
    /// `n` nodes with ids `1..=n` on free ports, each dialing the others
    /// directly, in a fresh run directory named after `name`.
    pub fn start(name: &str, n: u64) -> Result<Self, Error> {
        Self::start_specs(name, mesh_specs(&free_addrs(n)?, &[]))
    }

    /// [`start`](Self::start) with mutual TLS: `kv-cluster certs` writes a
    /// CA and a certificate per node into `<run dir>/certs`, every node runs
    /// with `--tls-dir` there, and CLIs and [`client`](Self::client)s
    /// verify the nodes with the CA.
    pub fn start_tls(name: &str, n: u64) -> Result<Self, Error> {
        let addrs = free_addrs(n)?;
        let mut cluster = Self::empty(name)?;
        let ids: Vec<u64> = addrs.iter().map(|&(id, _)| id).collect();
        let certs = cluster.make_certs(&ids)?;
        let tls = ["--tls-dir".to_owned(), certs.display().to_string()];
        let specs = mesh_specs(&addrs, &tls);
        cluster.tls_dir = Some(certs);
        cluster.spawn_all(specs)?;
        Ok(cluster)
    }

    fn empty(name: &str) -> Result<Self, Error> {
        Ok(ProcessCluster {
            bin: binary()?,
            dir: run_dir(name)?,
            nodes: BTreeMap::new(),
            keep: false,
            tls_dir: None,
        })
    }

    /// Runs `kv-cluster certs --dir <run dir>/certs --nodes <ids>` and
    /// returns the directory.
    pub fn make_certs(&self, ids: &[u64]) -> Result<PathBuf, Error> {
        let dir = self.dir.join("certs");
        let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let out = Command::new(&self.bin)
            .arg("certs")
            .arg("--dir")
            .arg(&dir)
            .arg("--nodes")
            .arg(&list)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(Error::Io(std::io::Error::other(format!(
                "kv-cluster certs --dir {} --nodes {list}: {}: {}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))));
        }
        Ok(dir)
    }

    /// The certificates directory, when the nodes run with TLS.
    pub fn tls_dir(&self) -> Option<&Path> {
        self.tls_dir.as_deref()
    }

    /// A client of the nodes (over TLS when they run with it) with
    /// transport id `client_id`.
    pub fn client(
        &self,
        client_id: u64,
        shards: u32,
    ) -> Result<crate::kv_cluster::client::Client, Error> {
        use crate::kv_cluster::security::Security;
        let security = match &self.tls_dir {
            Some(dir) => Security::Tls(Box::new(
                crate::kv_cluster::certs::client_tls(dir)
                    .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?,
            )),
            None => Security::Plain,
        };
        crate::kv_cluster::client::Client::with_security(
            client_id,
            &self.client_addrs(),
            shards,
            security,
        )
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))
    }

    /// Starts one process per spec.
    pub fn start_specs(name: &str, specs: Vec<NodeSpec>) -> Result<Self, Error> {
        let mut cluster = Self::empty(name)?;
        cluster.spawn_all(specs)?;
        Ok(cluster)
    }

    fn spawn_all(&mut self, specs: Vec<NodeSpec>) -> Result<(), Error> {
        let cluster = self;
        for spec in specs {
            let id = spec.id;
            cluster.nodes.insert(
                id,
                NodeProcess {
                    spec,
                    child: None,
                    paused: false,
                },
            );
            cluster.spawn(id)?;
        }
        Ok(())
    }

    /// The run directory: node data in `data-<id>`, output in
    /// `node-<id>.log` (every incarnation appended).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps the run directory when dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// The binary the nodes run.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Every node's id and listen address (what clients use).
    pub fn client_addrs(&self) -> Vec<(u64, SocketAddr)> {
        self.nodes
            .iter()
            .map(|(&id, n)| (id, n.spec.listen))
            .collect()
    }

    /// The node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The OS process id of node `id`, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes
            .get(&id)
            .and_then(|n| n.child.as_ref())
            .map(Child::id)
    }

    /// Where node `id` writes its output.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.log"))
    }

    fn spawn(&mut self, id: u64) -> Result<(), Error> {
        let log_path = self.log_path(id);
        let data = self.dir.join(format!("data-{id}"));
        let node = self.nodes.get_mut(&id).ok_or(Error::NoSuchNode(id))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut command = Command::new(&self.bin);
        command
            .arg("node")
            .arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(node.spec.listen.to_string())
            .arg("--data-dir")
            .arg(&data)
            .args(&node.spec.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if !node.spec.peers.is_empty() {
            command.arg("--peers").arg(node_list(&node.spec.peers));
        }
        node.child = Some(command.spawn()?);
        node.paused = false;
        Ok(())
    }

    /// `kill -9` node `id` and reaps it.
    pub fn kill(&mut self, id: u64) -> Result<(), Error> {
        let node = self.nodes.get_mut(&id).ok_or(Error::NoSuchNode(id))?;
        if let Some(mut child) = node.child.take() {
            // Already exited is fine: the point is that it is gone.
            let _ = child.kill();
            child.wait()?;
        }
        node.paused = false;
        Ok(())
    }

    /// Starts node `id` again with the same flags and data directory.
    pub fn restart(&mut self, id: u64) -> Result<(), Error> {
        self.kill(id)?;
        self.spawn(id)
    }

    /// SIGSTOP node `id`.
    pub fn pause(&mut self, id: u64) -> Result<(), Error> {
        let pid = self.pid(id).ok_or(Error::NoSuchNode(id))?;
        signal(pid, "-STOP")?;
        if let Some(n) = self.nodes.get_mut(&id) {
            n.paused = true;
        }
        Ok(())
    }

    /// SIGCONT node `id`.
    pub fn resume(&mut self, id: u64) -> Result<(), Error> {
        let pid = self.pid(id).ok_or(Error::NoSuchNode(id))?;
        signal(pid, "-CONT")?;
        if let Some(n) = self.nodes.get_mut(&id) {
            n.paused = false;
        }
        Ok(())
    }

    /// Resumes every paused node.
    pub fn resume_all(&mut self) -> Result<(), Error> {
        let paused: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.paused)
            .map(|(&id, _)| id)
            .collect();
        for id in paused {
            self.resume(id)?;
        }
        Ok(())
    }

    /// Nodes whose process exited on its own (id and status): a crash.
    pub fn exited(&mut self) -> Vec<(u64, ExitStatus)> {
        let mut out = Vec::new();
        for (&id, node) in &mut self.nodes {
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                out.push((id, status));
            }
        }
        out
    }

    /// The last `lines` lines of every node's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for &id in self.nodes.keys() {
            let text = fs::read_to_string(self.log_path(id)).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!("--- node {id} log (last {lines} lines) ---\n"));
            for line in all.iter().skip(from) {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Starts a CLI command (`put`, `get`, `status`, ...) against the
    /// nodes' listen addresses: `args` come after `--nodes`. Output goes
    /// to `cli-<tag>.out` in the run directory.
    pub fn spawn_cli(&self, tag: &str, command: &str, args: &[&str]) -> Result<CliProcess, Error> {
        let tls = self.tls_dir.as_ref().map(|d| d.display().to_string());
        let mut all: Vec<&str> = Vec::new();
        if let Some(dir) = &tls {
            all.extend(["--tls-dir", dir.as_str()]);
        }
        all.extend_from_slice(args);
        spawn_cli(
            &self.bin,
            &self.dir,
            tag,
            command,
            &node_list(&self.client_addrs()),
            &all,
        )
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                // SIGKILL also ends a stopped process.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if self.keep || std::thread::panicking() {
            eprintln!("kept node logs and data in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A CLI process started by [`spawn_cli`], killed if dropped unfinished.
#[derive(Debug)]
pub struct CliProcess {
    child: Option<Child>,
    output: PathBuf,
    started: Instant,
    /// The command line, for messages.
    pub line: String,
}

/// How a CLI process ended.
#[derive(Clone, Debug)]
pub struct CliOutcome {
    /// Its exit status; `None` if it outlived its bound and was killed.
    pub status: Option<ExitStatus>,
    /// Its stdout and stderr.
    pub output: String,
    /// From spawn to exit (or to the kill).
    pub elapsed: Duration,
    /// The command line.
    pub line: String,
}

impl CliOutcome {
    /// Whether it exited 0 in time.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Starts `bin command --nodes <nodes> args...` with output to
/// `dir/cli-<tag>.out`.
pub fn spawn_cli(
    bin: &Path,
    dir: &Path,
    tag: &str,
    command: &str,
    nodes: &str,
    args: &[&str],
) -> Result<CliProcess, Error> {
    let output = dir.join(format!("cli-{tag}.out"));
    let file = File::create(&output)?;
    let child = Command::new(bin)
        .arg(command)
        .arg("--nodes")
        .arg(nodes)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()?;
    Ok(CliProcess::from_child(
        child,
        output,
        format!("kv-cluster {command} --nodes {nodes} {}", args.join(" ")),
    ))
}

impl CliProcess {
    /// Takes charge of `child` (killed if dropped unfinished), whose
    /// output goes to the file `output`; `line` names it in messages.
    pub fn from_child(child: Child, output: PathBuf, line: String) -> Self {
        CliProcess {
            child: Some(child),
            output,
            started: Instant::now(),
            line,
        }
    }

    /// Its OS process id, while it is not reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its stdin, if it was spawned with a pipe there and it is open.
    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.child.as_mut().and_then(|c| c.stdin.as_mut())
    }

    /// Closes its stdin (end of input).
    pub fn close_stdin(&mut self) {
        if let Some(child) = self.child.as_mut() {
            drop(child.stdin.take());
        }
    }

    /// What it wrote so far.
    pub fn output(&self) -> String {
        fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// `kill -9` and reap it.
    pub fn kill(&mut self) -> Result<(), Error> {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: the point is that it is gone.
            let _ = child.kill();
            child.wait()?;
        }
        Ok(())
    }

    /// Its exit status if it has exited.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>, Error> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => Ok(None),
        }
    }

    /// Waits until `what` holds for its output, or `bound` passes; returns
    /// whether it held.
    pub fn wait_output(&self, bound: Duration, what: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + bound;
        loop {
            if what(&self.output()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until it exits or `deadline` passes (then kills it).
    pub fn wait_until(mut self, deadline: Instant) -> Result<CliOutcome, Error> {
        let mut status = None;
        if let Some(mut child) = self.child.take() {
            loop {
                if let Some(s) = child.try_wait()? {
                    status = Some(s);
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    child.wait()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(CliOutcome {
            status,
            output: fs::read_to_string(&self.output).unwrap_or_default(),
            elapsed: self.started.elapsed(),
            line: self.line.clone(),
        })
    }

    /// Waits at most `bound` from now.
    pub fn wait_for(self, bound: Duration) -> Result<CliOutcome, Error> {
        self.wait_until(Instant::now() + bound)
    }
}

impl Drop for CliProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Bytes queued in TCP sockets (Send-Q + Recv-Q, from `ss -tn`) on
/// connections with an end on one of `ports`; `None` if `ss` cannot run.
pub fn queued_bytes(ports: &[u16]) -> Option<u64> {
    let out = Command::new("ss")
        .arg("-tn")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(parse_ss(&String::from_utf8_lossy(&out.stdout), ports))
}

/// Sums Recv-Q and Send-Q over `ss -tn` lines whose local or peer port
/// is in `ports`.
pub fn parse_ss(text: &str, ports: &[u16]) -> u64 {
    let port_of = |field: &str| field.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    let mut total = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // State Recv-Q Send-Q Local:Port Peer:Port [Process]
        let [state, recv, send, local, peer, ..] = fields.as_slice() else {
            continue;
        };
        // A listening socket's Send-Q is its backlog, not queued bytes.
        if *state == "LISTEN" {
            continue;
        }
        let (Ok(recv), Ok(send)) = (recv.parse::<u64>(), send.parse::<u64>()) else {
            continue;
        };
        let ours = |f: &str| port_of(f).is_some_and(|p| ports.contains(&p));
        if ours(local) || ours(peer) {
            total += recv + send;
        }
    }
    total
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the process tests of one test binary one at a time: each starts
/// its own processes on a machine that may have two cores.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The runtime the process tests drive their in-process clients on: two
/// workers, like the machine. Test machinery: panics if the OS refuses it
/// threads.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
}

/// Fails the running test with `what`, keeping `cluster`'s run directory
/// and printing the tails of its nodes' logs.
pub fn fail(cluster: &mut ProcessCluster, what: &str) -> ! {
    cluster.keep();
    panic!(
        "{what}\nnode logs and data kept in {}\n{}",
        cluster.dir().display(),
        cluster.log_tails(15)
    );
}

/// `n` nodes started as [`ProcessCluster::start`] starts them, returned
/// once each of their `shards` has a leader, waiting at most `bound` with
/// a client on `rt`. Test machinery: fails the test (keeping the run
/// directory) if they do not start or elect no leaders.
pub fn started(
    rt: &tokio::runtime::Runtime,
    name: &str,
    n: u64,
    shards: u32,
    bound: Duration,
) -> ProcessCluster {
    let mut cluster =
        ProcessCluster::start(name, n).unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let nodes = cluster.client_addrs();
    if let Err(why) = rt.block_on(super::probe::wait_for_leaders(
        super::probe::next_client_id(),
        &nodes,
        shards,
        bound,
    )) {
        fail(
            &mut cluster,
            &format!("a fresh {n}-node cluster elected no leaders: {why}"),
        );
    }
    cluster
}

/// Three nodes on free loopback ports that reach each other only through
/// the proxies of the returned [`Network`], where partitions are made.
pub fn start_proxied(name: &str) -> Result<(Network, ProcessCluster), Error> {
    let real = free_addrs(3)?;
    let net = Network::new(&real)?;
    let specs = real
        .iter()
        .map(|&(id, listen)| NodeSpec {
            id,
            listen,
            peers: net.peers_of(id),
            extra: Vec::new(),
        })
        .collect();
    let cluster = ProcessCluster::start_specs(name, specs)?;
    Ok((net, cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_lines_of_our_ports_are_summed() {
        let text = "State  Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n\
                    ESTAB  10     200    127.0.0.1:7001     127.0.0.1:40000\n\
                    ESTAB  0      5      127.0.0.1:40000    127.0.0.1:7001\n\
                    ESTAB  999    999    127.0.0.1:5000     127.0.0.1:6000\n\
                    LISTEN 0      128    [::1]:7002         [::]:*\n";
        assert_eq!(parse_ss(text, &[7001, 7002]), 215);
    }
}
