//! A throwaway PostgreSQL server for one test: `initdb` and `pg_ctl` (Debian's packages, which
//! scripts/test installs) on a free loopback port, in a directory of its own, stopped and
//! removed when dropped. As root, it runs as the `postgres` user (PostgreSQL refuses root).

use std::path::PathBuf;
use std::process::Command;

pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    /// `postgres://…/openivs`: the nodes' `--database-url` (openivs creates the database).
    pub url: String,
}

/// Runs `command` (a shell line) as the `postgres` user when this process is root.
fn as_postgres(command: &str) -> std::process::Output {
    let root = Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0\n"));
    let output = if root {
        Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", command]).output()
    } else {
        Command::new("sh").args(["-c", command]).output()
    };
    output.expect("sh runs")
}

impl Postgres {
    /// A node named `node_id` of the cluster on this database (the real binary, as the API suite
    /// runs it), with `extra` flags.
    pub fn node_with(&self, node_id: &str, extra: &[&str]) -> crate::harness::Server {
        crate::harness::Server::with_args(&[&["--database-url", &self.url, "--node-id", node_id][..], extra].concat())
    }

    /// A node named `node_id` of the cluster on this database.
    pub fn node(&self, node_id: &str) -> crate::harness::Server {
        self.node_with(node_id, &[])
    }

    pub fn start() -> Postgres {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL must be installed to run the cluster tests (scripts/test installs it)")
            .flatten()
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .collect();
        versions.sort();
        let bin = versions.pop().expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = std::env::temp_dir().join(format!("openivs-cluster-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chown").arg("postgres").arg(&dir).output();
        let (data, log) = (dir.join("data"), dir.join("server.log"));
        let init = as_postgres(&format!(
            "{}/initdb -D {} -U postgres --auth=trust -E UTF8 --locale=C.UTF-8",
            bin.display(),
            data.display()
        ));
        assert!(init.status.success(), "initdb failed: {}", String::from_utf8_lossy(&init.stderr));
        let port = free_port();
        let started = as_postgres(&format!(
            "{}/pg_ctl -D {} -l {} -w -o '-c listen_addresses=127.0.0.1 -p {port} -k {} -c max_connections=200' start",
            bin.display(),
            data.display(),
            log.display(),
            dir.display()
        ));
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(started.status.success(), "pg_ctl start failed: {log_text}");
        Postgres { url: format!("postgres://postgres@127.0.0.1:{port}/openivs"), dir, bin }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        as_postgres(&format!(
            "{}/pg_ctl -D {} -m immediate -w stop",
            self.bin.display(),
            self.dir.join("data").display()
        ));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
