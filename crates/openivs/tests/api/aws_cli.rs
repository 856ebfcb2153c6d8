//! The AWS CLI against openivs: each resource type created, read, listed, updated, tagged,
//! untagged and deleted with `aws ivs …`, and the JSON it prints checked.
//!
//! The CLI must be installed (`.ci/run` installs it); these tests fail, not skip, without it.
//! The CLI's bundled IVS model (awscli 1.46) predates the failover-slate operations, so those
//! commands run with `AWS_DATA_PATH` pointing at the current model (the same file openivs
//! validates against): the CLI's documented way to use a newer service model. Over HTTPS
//! (`--http-tls`) the CLI trusts the server's certificate with `--ca-bundle`, and curl checks that
//! HTTP/2 is offered by ALPN.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::harness::{ACCOUNT, P384_PUBLIC_KEYS, REGION, Server};

struct Cli<'a> {
    server: &'a Server,
    data_path: Option<PathBuf>,
    /// The certificate to trust (a server with `--http-tls`).
    ca_bundle: Option<PathBuf>,
}

fn cli_program() -> String {
    std::env::var("OPENIVS_TEST_AWS_CLI").unwrap_or_else(|_| "aws".into())
}

impl<'a> Cli<'a> {
    fn new(server: &'a Server) -> Cli<'a> {
        Cli { server, data_path: None, ca_bundle: None }
    }

    /// A CLI that loads the current IVS model instead of its bundled one.
    fn with_current_model(server: &'a Server) -> Cli<'a> {
        let dir = server.data_dir.join("aws-data/ivs/2020-07-14");
        std::fs::create_dir_all(&dir).unwrap();
        let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/ivs-service-model.json");
        std::fs::copy(model, dir.join("service-2.json")).unwrap();
        Cli { server, data_path: Some(server.data_dir.join("aws-data")), ca_bundle: None }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(cli_program());
        command
            .arg("ivs")
            .args(args)
            .args(["--endpoint-url", &self.server.endpoint, "--output", "json"])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
        if let Some(path) = &self.data_path {
            command.env("AWS_DATA_PATH", path);
        }
        if let Some(path) = &self.ca_bundle {
            command.arg("--ca-bundle").arg(path);
        }
        command.output().unwrap_or_else(|e| panic!("the AWS CLI ({}) must be installed: {e}", cli_program()))
    }

    /// Runs a command that must succeed; returns its JSON output (Null when it printed nothing).
    fn ok(&self, args: &[&str]) -> Value {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "aws ivs {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        if stdout.trim().is_empty() { Value::Null } else { serde_json::from_str(&stdout).unwrap() }
    }

    /// Runs a command that must fail with this error code.
    fn fails(&self, args: &[&str], code: &str) {
        let output = self.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "aws ivs {args:?} succeeded");
        assert!(stderr.contains(&format!("({code})")), "aws ivs {args:?}: {stderr}");
    }

    /// tag-resource, list-tags-for-resource, untag-resource on one ARN.
    fn tag_round_trip(&self, arn: &str) {
        // Empty outputs (`{}`) print nothing.
        assert_eq!(self.ok(&["tag-resource", "--resource-arn", arn, "--tags", "team=video,stage=test"]), Value::Null);
        let tags = self.ok(&["list-tags-for-resource", "--resource-arn", arn]);
        assert_eq!(tags["tags"], serde_json::json!({"team": "video", "stage": "test"}), "{arn}");
        self.ok(&["untag-resource", "--resource-arn", arn, "--tag-keys", "stage"]);
        let tags = self.ok(&["list-tags-for-resource", "--resource-arn", arn]);
        assert_eq!(tags["tags"], serde_json::json!({"team": "video"}), "{arn}");
    }
}

fn write_temp(server: &Server, name: &str, text: &str) -> String {
    let path = server.data_dir.join(name);
    std::fs::write(&path, text).unwrap();
    format!("file://{}", path.display())
}

#[test]
fn cli_channels_and_stream_keys() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let created = cli.ok(&["create-channel", "--name", "cli-channel", "--latency-mode", "NORMAL"]);
    let channel = &created["channel"];
    let arn = channel["arn"].as_str().unwrap().to_owned();
    assert!(arn.starts_with(&format!("arn:aws:ivs:{REGION}:{ACCOUNT}:channel/")));
    assert_eq!(channel["name"], "cli-channel");
    assert_eq!(channel["latencyMode"], "NORMAL");
    assert_eq!(channel["type"], "STANDARD");
    assert_eq!(channel["authorized"], false);
    assert_eq!(channel["insecureIngest"], false);
    assert_eq!(channel["preset"], "");
    assert_eq!(channel["containerFormat"], "TS");
    assert!(channel["playbackUrl"].as_str().unwrap().ends_with(".m3u8"));
    let key = &created["streamKey"];
    assert!(key["value"].as_str().unwrap().starts_with(&format!("sk_{REGION}_")));
    assert_eq!(key["channelArn"], arn.as_str());

    assert_eq!(cli.ok(&["get-channel", "--arn", &arn])["channel"], *channel);
    let listed = cli.ok(&["list-channels"]);
    assert_eq!(listed["channels"].as_array().unwrap().len(), 1);
    assert_eq!(listed["channels"][0]["name"], "cli-channel");
    let updated = cli.ok(&["update-channel", "--arn", &arn, "--type", "ADVANCED_SD", "--authorized"]);
    assert_eq!(updated["channel"]["type"], "ADVANCED_SD");
    assert_eq!(updated["channel"]["preset"], "HIGHER_BANDWIDTH_DELIVERY");
    assert_eq!(updated["channel"]["authorized"], true);
    assert_eq!(cli.ok(&["batch-get-channel", "--arns", &arn])["channels"][0]["arn"], arn.as_str());
    cli.tag_round_trip(&arn);

    let key_arn = key["arn"].as_str().unwrap().to_owned();
    assert_eq!(cli.ok(&["get-stream-key", "--arn", &key_arn])["streamKey"], *key);
    assert_eq!(cli.ok(&["list-stream-keys", "--channel-arn", &arn])["streamKeys"][0]["arn"], key_arn.as_str());
    assert_eq!(cli.ok(&["batch-get-stream-key", "--arns", &key_arn])["streamKeys"][0]["value"], key["value"]);
    cli.fails(&["create-stream-key", "--channel-arn", &arn], "ServiceQuotaExceededException");
    cli.tag_round_trip(&key_arn);
    assert_eq!(cli.ok(&["delete-stream-key", "--arn", &key_arn]), Value::Null);
    let new_key = cli.ok(&["create-stream-key", "--channel-arn", &arn]);
    assert_ne!(new_key["streamKey"]["value"], key["value"]);

    cli.fails(&["get-stream", "--channel-arn", &arn], "ChannelNotBroadcasting");
    cli.fails(&["stop-stream", "--channel-arn", &arn], "ChannelNotBroadcasting");
    cli.fails(&["put-metadata", "--channel-arn", &arn, "--metadata", "hi"], "ChannelNotBroadcasting");
    assert_eq!(cli.ok(&["list-streams"])["streams"], serde_json::json!([]));
    assert_eq!(cli.ok(&["list-stream-sessions", "--channel-arn", &arn])["streamSessions"], serde_json::json!([]));
    cli.ok(&["start-viewer-session-revocation", "--channel-arn", &arn, "--viewer-id", "viewer-1"]);

    assert_eq!(cli.ok(&["delete-channel", "--arn", &arn]), Value::Null);
    cli.fails(&["get-channel", "--arn", &arn], "ResourceNotFoundException");
    cli.fails(&["create-channel", "--name", "bad name"], "ValidationException");
}

#[test]
fn cli_playback_key_pairs() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let key_file = write_temp(&server, "public.pem", P384_PUBLIC_KEYS[0]);
    let imported = cli.ok(&["import-playback-key-pair", "--public-key-material", &key_file, "--name", "cli-key"]);
    let key_pair = &imported["keyPair"];
    let arn = key_pair["arn"].as_str().unwrap().to_owned();
    assert_eq!(key_pair["name"], "cli-key");
    assert_eq!(key_pair["fingerprint"].as_str().unwrap().split(':').count(), 16);
    assert_eq!(cli.ok(&["get-playback-key-pair", "--arn", &arn])["keyPair"], *key_pair);
    assert_eq!(cli.ok(&["list-playback-key-pairs"])["keyPairs"][0]["arn"], arn.as_str());
    cli.fails(&["import-playback-key-pair", "--public-key-material", &key_file], "ConflictException");
    cli.tag_round_trip(&arn);
    assert_eq!(cli.ok(&["delete-playback-key-pair", "--arn", &arn]), Value::Null);
    cli.fails(&["get-playback-key-pair", "--arn", &arn], "ResourceNotFoundException");
}

#[test]
fn cli_recording_configurations_and_policies() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let created = cli.ok(&[
        "create-recording-configuration",
        "--name",
        "cli-rec",
        "--destination-configuration",
        "s3={bucketName=cli-bucket}",
        "--thumbnail-configuration",
        "recordingMode=INTERVAL,targetIntervalSeconds=30",
    ]);
    let config = &created["recordingConfiguration"];
    let arn = config["arn"].as_str().unwrap().to_owned();
    assert_eq!(config["state"], "ACTIVE");
    assert_eq!(config["destinationConfiguration"]["s3"]["bucketName"], "cli-bucket");
    assert_eq!(config["thumbnailConfiguration"]["targetIntervalSeconds"], 30);
    assert_eq!(cli.ok(&["get-recording-configuration", "--arn", &arn])["recordingConfiguration"], *config);
    assert_eq!(cli.ok(&["list-recording-configurations"])["recordingConfigurations"][0]["arn"], arn.as_str());
    cli.tag_round_trip(&arn);
    let channel = cli.ok(&["create-channel", "--recording-configuration-arn", &arn]);
    let channel_arn = channel["channel"]["arn"].as_str().unwrap().to_owned();
    cli.fails(&["delete-recording-configuration", "--arn", &arn], "ConflictException");
    // Detaching ("" = no recording) frees it; CLI users write the empty string like this.
    cli.ok(&["update-channel", "--arn", &channel_arn, "--recording-configuration-arn", ""]);
    assert_eq!(cli.ok(&["delete-recording-configuration", "--arn", &arn]), Value::Null);

    let policy = cli.ok(&[
        "create-playback-restriction-policy",
        "--name",
        "cli-policy",
        "--allowed-countries",
        "US",
        "MX",
        // As JSON: the CLI would fetch a bare https:// argument as a remote parameter file.
        "--allowed-origins",
        r#"["https://example.com"]"#,
    ]);
    let policy = &policy["playbackRestrictionPolicy"];
    let policy_arn = policy["arn"].as_str().unwrap().to_owned();
    assert_eq!(policy["allowedCountries"], serde_json::json!(["US", "MX"]));
    assert_eq!(policy["allowedOrigins"], serde_json::json!(["https://example.com"]));
    assert_eq!(policy["enableStrictOriginEnforcement"], false);
    let updated =
        cli.ok(&["update-playback-restriction-policy", "--arn", &policy_arn, "--enable-strict-origin-enforcement"]);
    assert_eq!(updated["playbackRestrictionPolicy"]["enableStrictOriginEnforcement"], true);
    assert_eq!(
        cli.ok(&["get-playback-restriction-policy", "--arn", &policy_arn])["playbackRestrictionPolicy"],
        updated["playbackRestrictionPolicy"]
    );
    assert_eq!(
        cli.ok(&["list-playback-restriction-policies"])["playbackRestrictionPolicies"][0]["arn"],
        policy_arn.as_str()
    );
    cli.tag_round_trip(&policy_arn);
    assert_eq!(cli.ok(&["delete-playback-restriction-policy", "--arn", &policy_arn]), Value::Null);
    cli.fails(&["get-playback-restriction-policy", "--arn", &policy_arn], "ResourceNotFoundException");
}

#[test]
fn cli_ad_configurations() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let playback = format!("playbackConfigurationArn=arn:aws:mediatailor:{REGION}:{ACCOUNT}:playbackConfiguration/cli");
    let created =
        cli.ok(&["create-ad-configuration", "--name", "cli-ads", "--media-tailor-playback-configurations", &playback]);
    let config = &created["adConfiguration"];
    let arn = config["arn"].as_str().unwrap().to_owned();
    assert_eq!(config["postRollConfiguration"], serde_json::json!({"durationSeconds": 15, "enabled": false}));
    assert_eq!(cli.ok(&["get-ad-configuration", "--arn", &arn])["adConfiguration"], *config);
    assert_eq!(cli.ok(&["list-ad-configurations"])["adConfigurations"][0]["arn"], arn.as_str());
    let updated = cli.ok(&[
        "update-ad-configuration",
        "--arn",
        &arn,
        "--post-roll-configuration",
        "durationSeconds=20,enabled=true",
    ]);
    assert_eq!(
        updated["adConfiguration"]["postRollConfiguration"],
        serde_json::json!({"durationSeconds": 20, "enabled": true})
    );
    cli.tag_round_trip(&arn);
    assert_eq!(cli.ok(&["delete-ad-configuration", "--arn", &arn]), Value::Null);
    cli.fails(&["get-ad-configuration", "--arn", &arn], "ResourceNotFoundException");
}

#[test]
fn cli_failover_slate_configurations() {
    let server = Server::start();
    let cli = Cli::with_current_model(&server);
    let created = cli.ok(&["create-failover-slate-configuration", "--name", "cli-slate"]);
    let config = &created["failoverSlateConfiguration"];
    let arn = config["arn"].as_str().unwrap().to_owned();
    assert_eq!(config["activationThresholdSeconds"], 3);
    assert_eq!(config["state"], "CREATED");
    assert_eq!(cli.ok(&["get-failover-slate-configuration", "--arn", &arn])["failoverSlateConfiguration"], *config);
    assert_eq!(cli.ok(&["list-failover-slate-configurations"])["failoverSlateConfigurations"][0]["arn"], arn.as_str());
    let updated = cli.ok(&["update-failover-slate-configuration", "--arn", &arn, "--min-slate-display-seconds", "10"]);
    assert_eq!(updated["failoverSlateConfiguration"]["minSlateDisplaySeconds"], 10);
    cli.fails(
        &["update-failover-slate-configuration", "--arn", &arn, "--min-slate-display-seconds", "11"],
        "ValidationException",
    );
    cli.tag_round_trip(&arn);
    assert_eq!(cli.ok(&["delete-failover-slate-configuration", "--arn", &arn]), Value::Null);
    cli.fails(&["get-failover-slate-configuration", "--arn", &arn], "ResourceNotFoundException");
}

/// The HTTP version curl used for `url` (`2`, `1.1`), trusting `ca`, asking with `version_flag`.
fn curl_http_version(url: &str, ca: &std::path::Path, version_flag: &str) -> String {
    let output = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", version_flag, "--cacert"])
        .arg(ca)
        .arg(url)
        .output()
        .expect("curl must be installed");
    assert!(output.status.success(), "curl {url}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn cli_over_https_and_http2_by_alpn() {
    // (One node: its own listener speaks TLS; the shipped nginx passes plain HTTP on.)
    let server = Server::single_node(&["--http-tls", "true"]);
    assert!(server.endpoint.starts_with("https://"), "{}", server.endpoint);
    let ca = server.data_dir.join("rtmps-certificate.pem");
    let cli = Cli { server: &server, data_path: None, ca_bundle: Some(ca.clone()) };
    let created = cli.ok(&["create-channel", "--name", "over-tls"]);
    let playback_url = created["channel"]["playbackUrl"].as_str().unwrap().to_owned();
    assert!(playback_url.starts_with("https://"), "{playback_url}");
    let arn = created["channel"]["arn"].as_str().unwrap().to_owned();
    assert_eq!(cli.ok(&["get-channel", "--arn", &arn])["channel"]["name"], "over-tls");
    // Without the certificate the CLI refuses the connection, as it would any untrusted server.
    let untrusted = Cli::new(&server).run(&["list-channels"]);
    assert!(!untrusted.status.success());
    // HTTP/2 when the client offers it (ALPN), HTTP/1.1 otherwise; playback over HTTP/2 too.
    let healthz = format!("{}/healthz", server.endpoint);
    assert_eq!(curl_http_version(&healthz, &ca, "--http2"), "2 200");
    assert_eq!(curl_http_version(&healthz, &ca, "--http1.1"), "1.1 200");
    // (Not live: the playback URL answers 404 over HTTP/2 as over HTTP/1.1.)
    assert_eq!(curl_http_version(&playback_url, &ca, "--http2"), "2 404");
    // A signed API call over HTTP/2: the signer signs `host`, and HTTP/2 carries it as the
    // `:authority` pseudo-header (curl, and browsers running the AWS SDK for JavaScript, send
    // no `host` header), so the server verifies against the authority.
    let output = Command::new("curl")
        .args(["-sS", "--http2", "-w", "\n%{http_version} %{http_code}", "--cacert"])
        .arg(&ca)
        .args(["--aws-sigv4", &format!("aws:amz:{REGION}:ivs"), "--user", "test:test"])
        .args(["-H", "content-type: application/json", "--data", &format!(r#"{{"arn":"{arn}"}}"#)])
        .arg(format!("{}/GetChannel", server.endpoint))
        .output()
        .expect("curl must be installed");
    let answer = String::from_utf8_lossy(&output.stdout);
    assert!(answer.ends_with("\n2 200"), "{answer} {}", String::from_utf8_lossy(&output.stderr));
    assert!(answer.contains(r#""name":"over-tls""#), "{answer}");
    // Plain HTTP on the TLS listener is refused (no answer a client could mistake).
    let plain = server.endpoint.replacen("https://", "http://", 1);
    let output = Command::new("curl")
        .args(["-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(&plain)
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&output.stdout), "200");
}
