//! The HTTP floor of `openivs-bench control-plane`: a bare axum server, in a process of its own
//! (`openivs-bench floor-server PORT`, started by the benchmark), that answers every request with
//! a fixed GetChannel-sized JSON body and checks nothing. What openivs adds to an answer
//! (signature, store read, JSON) is measured against it.

use std::process::{Child, Command, Stdio};

/// A GetChannel answer's size and shape.
const FIXED_BODY: &str = r#"{"channel":{"arn":"arn:aws:ivs:us-west-2:123456789012:channel/abcdABCDefgh","authorized":false,"containerFormat":"TS","ingestEndpoint":"127.0.0.1","insecureIngest":false,"latencyMode":"LOW","multitrackInputConfiguration":{"enabled":false,"maximumResolution":"FULL_HD","policy":"ALLOW"},"name":"","playbackRestrictionPolicyArn":"","playbackUrl":"http://127.0.0.1:8080/api/video/v1/us-west-2.123456789012.channel.abcdABCDefgh.m3u8","preset":"","recordingConfigurationArn":"","srt":{"endpoint":"127.0.0.1","passphrase":"x"},"tags":{},"type":"STANDARD"}}"#;

/// Serves the floor on 127.0.0.1:`port` until killed.
pub fn serve(port: u16) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
        let app = axum::Router::new()
            .fallback(|| async { ([(axum::http::header::CONTENT_TYPE, "application/json")], FIXED_BODY) });
        axum::serve(listener, app).await.map_err(|e| e.to_string())
    })
}

/// Starts the floor server (this binary, `floor-server PORT`) as a child process.
pub async fn start() -> Result<crate::Peer, String> {
    let port = crate::free_port();
    let child: Child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["floor-server", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the floor server: {e}"))?;
    let peer = crate::Peer { name: "axum floor", child, port, rtmp_port: None, rtmps_port: None, data_dir: None };
    crate::wait_for_port(port).await?;
    Ok(peer)
}
