// Plays HLS URLs with hls.js in headless Chromium and reports, per URL, whether playback ran:
// currentTime advancing, fatal errors, and glass-to-glass latency (Date.now() minus
// hls.playingDate, which comes from EXT-X-PROGRAM-DATE-TIME).
//
// Usage: node play.mjs SECONDS URL [URL…]   → prints one JSON array on stdout.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const [seconds, ...urls] = process.argv.slice(2);
const here = dirname(fileURLToPath(import.meta.url));
const hlsSource = readFileSync(join(here, 'node_modules/hls.js/dist/hls.min.js'), 'utf8');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
  ],
});

async function play(url) {
  const page = await browser.newPage();
  await page.setContent('<!doctype html><video id="v" muted autoplay playsinline></video>');
  await page.addScriptTag({ content: hlsSource });
  return page.evaluate(async ({ url, seconds }) => {
    const video = document.getElementById('v');
    const result = {
      url,
      supported: window.Hls.isSupported(),
      mse_h264_aac: MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001f,mp4a.40.2"'),
      fatal: [],
      start_time: null,
      end_time: null,
      latencies_ms: [],
    };
    if (!result.supported) return result;
    const hls = new window.Hls({ lowLatencyMode: true });
    hls.on(window.Hls.Events.ERROR, (_event, data) => {
      if (data.fatal) result.fatal.push(`${data.type}: ${data.details}`);
    });
    hls.loadSource(url);
    hls.attachMedia(video);
    video.play().catch(() => {});
    // Wait for playback to start (at most 15 s), then watch it for the given time.
    const started = Date.now();
    while (video.currentTime === 0 && Date.now() - started < 15000 && result.fatal.length === 0) {
      await new Promise((r) => setTimeout(r, 100));
    }
    result.start_time = video.currentTime;
    const until = Date.now() + seconds * 1000;
    while (Date.now() < until && result.fatal.length === 0) {
      await new Promise((r) => setTimeout(r, 1000));
      if (hls.playingDate) result.latencies_ms.push(Date.now() - hls.playingDate.getTime());
    }
    result.end_time = video.currentTime;
    hls.destroy();
    return result;
  }, { url, seconds: Number(seconds) });
}

try {
  const results = await Promise.all(urls.map(play));
  console.log(JSON.stringify(results));
} finally {
  await browser.close();
}
