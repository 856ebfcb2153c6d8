//! moto's S3 server (`moto_server`, from PyPI) on a free loopback port, for the tests whose
//! recordings go to an S3-compatible store; read back with the AWS CLI.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `moto_server` on a free loopback port, killed when dropped.
pub(crate) struct Moto {
    child: Child,
    pub(crate) endpoint: String,
}

impl Moto {
    pub(crate) fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (PyPI moto[server]) must be installed: scripts/test installs it into .venv");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server answers on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, endpoint }
    }

    /// The AWS CLI against moto.
    pub(crate) fn cli(&self, args: &[&str]) -> std::process::Output {
        let output = Command::new("aws")
            .args(["--endpoint-url", &self.endpoint, "--region", "us-east-1"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("the AWS CLI must be installed: scripts/test installs it into .venv");
        assert!(output.status.success(), "aws {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        output
    }

    /// Every object of `bucket`, copied into `into`.
    pub(crate) fn download(&self, bucket: &str, into: &Path) {
        self.cli(&["s3", "sync", "--quiet", &format!("s3://{bucket}"), &into.to_string_lossy()]);
    }

    /// The keys of `bucket` under `prefix`.
    pub(crate) fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let output = self.cli(&[
            "s3api",
            "list-objects-v2",
            "--bucket",
            bucket,
            "--prefix",
            prefix,
            "--query",
            "Contents[].Key",
        ]);
        serde_json::from_slice::<Option<Vec<String>>>(&output.stdout).unwrap().unwrap_or_default()
    }
}

impl Moto {
    /// Waits (at most `limit`) until a key of `bucket` under `prefix` ends with `suffix`; that key.
    pub(crate) fn wait_for_key(&self, bucket: &str, prefix: &str, suffix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let keys = self.keys(bucket, prefix);
            if let Some(key) = keys.iter().find(|k| k.ends_with(suffix)) {
                return key.clone();
            }
            assert!(Instant::now() < deadline, "{suffix} reached S3 within {limit:?}: {keys:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
