//! nginx running the repository's shipped load balancer configuration
//! (`deploy/nginx/openivs-cluster.conf`) in front of a cluster's nodes, as an operator runs it:
//! only its node addresses and listening ports are changed to this machine's. Used by the
//! cluster tests and by the API suite's cluster run (see the harness).
//!
//! Needs nginx with its stream module (Debian: nginx, libnginx-mod-stream; scripts/test installs
//! them); fails, not skips, without them.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's nginx keeps its stream module (TCP and UDP proxying: RTMP, RTMPS, SRT).
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// `host:port` of a node's listeners.
pub struct NodeAddresses {
    pub http: String,
    pub rtmp: String,
    pub rtmps: String,
    pub srt: String,
}

/// The loopback ports nginx listens on (127.0.0.1).
#[derive(Clone, Copy)]
pub struct BalancerPorts {
    pub http: u16,
    pub rtmp: u16,
    pub rtmps: u16,
    pub srt: u16,
}

impl BalancerPorts {
    /// Ports free on 127.0.0.1 now.
    pub fn free() -> BalancerPorts {
        BalancerPorts::free_on(&[])
    }

    /// Ports free now on 127.0.0.1 and on each of `also` (the addresses of nodes that listen on
    /// the balancer's port numbers, so that their public URLs name the balancer).
    pub fn free_on(also: &[&str]) -> BalancerPorts {
        let tcp = || free_port(also, |ip, port| TcpListener::bind((ip, port)).is_ok());
        let udp = || free_port(also, |ip, port| UdpSocket::bind((ip, port)).is_ok());
        BalancerPorts { http: tcp(), rtmp: tcp(), rtmps: tcp(), srt: udp() }
    }
}

/// How nginx spreads HTTP requests over the nodes.
#[derive(Clone, Copy, PartialEq)]
pub enum Spread {
    /// As shipped: `least_conn`, which sends one client's calls, one after another, to one node.
    AsShipped,
    /// Round robin: consecutive calls reach different nodes (what is written on one is read on
    /// another).
    RoundRobin,
}

/// nginx with the shipped configuration in front of some nodes, stopped when dropped.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    pub ports: BalancerPorts,
}

/// A port the system hands out as free on 127.0.0.1 that `bindable` also finds free on each of
/// `also` (another test's nodes may hold it there).
fn free_port(also: &[&str], bindable: impl Fn(&str, u16) -> bool) -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if bindable("127.0.0.1", port) && also.iter().all(|ip| bindable(ip, port)) {
            return port;
        }
    }
}

impl Nginx {
    /// nginx in front of three test servers, on free ports.
    pub fn start(nodes: &[&crate::harness::Server]) -> Nginx {
        let addresses: Vec<NodeAddresses> = nodes
            .iter()
            .map(|node| NodeAddresses {
                http: format!("127.0.0.1:{}", node.port),
                rtmp: node.rtmp_address.clone(),
                rtmps: node.rtmps_address.clone(),
                srt: node.srt_address.clone(),
            })
            .collect();
        Nginx::in_front_of(&addresses, BalancerPorts::free(), Spread::AsShipped)
    }

    pub fn in_front_of(nodes: &[NodeAddresses], ports: BalancerPorts, spread: Spread) -> Nginx {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx/openivs-cluster.conf");
        let mut conf = std::fs::read_to_string(&shipped).unwrap();
        // The shipped file's three nodes (10.0.0.11-13) become this machine's.
        for (index, node) in nodes.iter().enumerate() {
            let host = format!("10.0.0.{}", 11 + index);
            for (port, address) in
                [("8080", &node.http), ("1935", &node.rtmp), ("4443", &node.rtmps), ("9000", &node.srt)]
            {
                conf = conf.replace(&format!("{host}:{port}"), address);
            }
        }
        let unreplaced = conf.lines().filter(|l| !l.trim_start().starts_with('#')).any(|l| l.contains("10.0.0."));
        assert!(!unreplaced, "the shipped configuration names as many nodes as the test runs");
        for (listen, port, suffix) in [
            ("listen 8080;", ports.http, ""),
            ("listen 1935;", ports.rtmp, ""),
            ("listen 4443;", ports.rtmps, ""),
            ("listen 9000 udp;", ports.srt, " udp"),
        ] {
            assert!(conf.contains(listen), "the shipped configuration has `{listen}`");
            conf = conf.replace(listen, &format!("listen 127.0.0.1:{port}{suffix};"));
        }
        if spread == Spread::RoundRobin {
            assert!(conf.contains("least_conn;\n"), "the shipped configuration balances HTTP with least_conn");
            conf = conf.replacen("least_conn;\n", "\n", 1);
        }
        assert!(
            Path::new(STREAM_MODULE).exists(),
            "nginx's stream module must be installed (Debian: libnginx-mod-stream; scripts/test installs it)"
        );
        let dir = std::env::temp_dir().join(format!("openivs-test-nginx-{}-{}", std::process::id(), ports.http));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        // nginx's own files (pid, logs, buffers) in the test's directory, not the system's.
        let http_settings = format!(
            "http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    \
             fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n"
        );
        let conf = conf.replacen("http {\n", &http_settings, 1);
        let main = format!(
            "load_module {STREAM_MODULE};\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nworker_processes 1;\n\
             events {{ worker_connections 1024; }}\n{conf}"
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        // (Debian puts it in /usr/sbin, which a user's PATH may leave out.)
        let program = if Path::new("/usr/sbin/nginx").exists() { "/usr/sbin/nginx" } else { "nginx" };
        let mut child = Command::new(program)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx must be installed (Debian: nginx; scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", ports.http)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                panic!("nginx exited ({status}): {log}");
            }
            assert!(Instant::now() < deadline, "nginx answers on port {}", ports.http);
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, dir, ports }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (SIGKILL would leave them behind).
        crate::harness::signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
