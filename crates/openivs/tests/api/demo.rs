//! `openivs serve --demo`: a channel named `demo` is live at start with the clip embedded in the
//! binary (no ffmpeg involved on the server's side), plays in ffprobe across the clip's loops,
//! is the same channel after a restart, and comes back after StopStream.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Server, wait_live};

#[tokio::test]
async fn the_demo_channel_is_live_from_the_start() {
    // (One node: the demo is one process tried out on one machine.)
    let mut server = Server::single_node(&["--demo"]);
    let client = server.client();
    let listed = client.list_channels().filter_by_name("demo").send().await.unwrap();
    assert_eq!(listed.channels().len(), 1, "{listed:?}");
    let arn = listed.channels()[0].arn().unwrap().to_owned();
    wait_live(&server, &arn, Duration::from_secs(10)).await;
    // The start-up banner: the console, the endpoint, the credentials, the demo channel's page.
    let banner = server.banner_text();
    for line in [
        format!("Console:      {}/console/", server.endpoint),
        format!("API:          {}", server.endpoint),
        "Credentials:  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test".to_owned(),
        format!("Demo channel: {arn} is live"),
    ] {
        assert!(banner.contains(&line), "{line:?} in {banner}");
    }
    let channel = client.get_channel().arn(&arn).send().await.unwrap();
    let channel = channel.channel().unwrap();
    assert_eq!(channel.r#type().map(|t| t.as_str()), Some("BASIC"));
    let playback_url = channel.playback_url().unwrap().to_owned();
    // Ten seconds of it decode without an error: the 4 s clip loops seamlessly.
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i", &playback_url, "-t", "10", "-f", "null", "-"])
        .output()
        .expect("ffmpeg must be installed");
    assert!(output.status.success() && output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
    let stream = client.get_stream().channel_arn(&arn).send().await.unwrap();
    assert_eq!(stream.stream().unwrap().health().map(|h| h.as_str()), Some("HEALTHY"));

    // StopStream: the demo goes live again a few seconds later, in a new session.
    let first = stream.stream().unwrap().stream_id().unwrap().to_owned();
    client.stop_stream().channel_arn(&arn).send().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(live) = client.get_stream().channel_arn(&arn).send().await
            && live.stream().unwrap().stream_id() != Some(first.as_str())
        {
            break;
        }
        assert!(Instant::now() < deadline, "the demo did not come back after StopStream");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A restart keeps the one demo channel.
    server.restart();
    let client = server.client();
    let listed = client.list_channels().filter_by_name("demo").send().await.unwrap();
    assert_eq!(listed.channels().len(), 1);
    assert_eq!(listed.channels()[0].arn(), Some(arn.as_str()));
    wait_live(&server, &arn, Duration::from_secs(10)).await;
}
