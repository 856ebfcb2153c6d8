// Plays HLS URLs with a real web player in headless Chromium and reports, per URL, whether
// playback ran: currentTime advancing, fatal errors, the longest stall, and the glass-to-glass
// latency the player sees (Date.now() minus the program date time of the frame playing, where
// the player exposes it).
//
// Players: hls.js, shaka (Shaka Player), videojs (video.js with its VHS engine).
// Usage: node play.mjs PLAYER SECONDS URL [URL…]   → prints one JSON array on stdout.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const [player, seconds, ...urls] = process.argv.slice(2);
const here = dirname(fileURLToPath(import.meta.url));
const sources = {
  'hls.js': 'node_modules/hls.js/dist/hls.min.js',
  shaka: 'node_modules/shaka-player/dist/shaka-player.compiled.js',
  videojs: 'node_modules/video.js/dist/video.min.js',
};
if (!sources[player]) throw new Error(`unknown player ${player}: one of ${Object.keys(sources).join(', ')}`);
const playerSource = readFileSync(join(here, sources[player]), 'utf8');

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
  await page.addScriptTag({ content: playerSource });
  return page.evaluate(async ({ player, url, seconds }) => {
    let video = document.getElementById('v');
    const result = {
      url,
      player,
      supported: true,
      mse_h264_aac: MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001f,mp4a.40.2"'),
      fatal: [],
      start_time: null,
      end_time: null,
      longest_stall_ms: 0,
      latencies_ms: [],
    };
    // Each player: start it, report fatal errors, and tell the date of the frame playing.
    let playingDate = () => null;
    let destroy = () => {};
    if (player === 'hls.js') {
      result.supported = window.Hls.isSupported();
      if (!result.supported) return result;
      const hls = new window.Hls({ lowLatencyMode: true });
      hls.on(window.Hls.Events.ERROR, (_event, data) => {
        if (data.fatal) result.fatal.push(`${data.type}: ${data.details}`);
      });
      hls.loadSource(url);
      hls.attachMedia(video);
      playingDate = () => hls.playingDate;
      destroy = () => hls.destroy();
    } else if (player === 'shaka') {
      window.shaka.polyfill.installAll();
      result.supported = window.shaka.Player.isBrowserSupported();
      if (!result.supported) return result;
      const shakaPlayer = new window.shaka.Player();
      await shakaPlayer.attach(video);
      shakaPlayer.configure({ streaming: { lowLatencyMode: true } });
      shakaPlayer.addEventListener('error', (event) => {
        if (event.detail.severity === window.shaka.util.Error.Severity.CRITICAL) {
          result.fatal.push(`shaka ${event.detail.code}`);
        }
      });
      try {
        await shakaPlayer.load(url);
      } catch (error) {
        result.fatal.push(`shaka load ${error.code}`);
      }
      playingDate = () => shakaPlayer.getPlayheadTimeAsDate();
      destroy = () => shakaPlayer.destroy();
    } else if (player === 'videojs') {
      const vjs = window.videojs(video, { autoplay: true, muted: true, liveui: true });
      vjs.on('error', () => {
        const error = vjs.error();
        result.fatal.push(`videojs ${error && error.code}: ${error && error.message}`);
      });
      vjs.src({ src: url, type: 'application/x-mpegURL' });
      video = vjs.tech(true).el();
      destroy = () => vjs.dispose();
    }
    video.play().catch(() => {});
    // Wait for playback to start (at most 15 s), then watch it for the given time.
    const started = Date.now();
    while (video.currentTime === 0 && Date.now() - started < 15000 && result.fatal.length === 0) {
      await new Promise((r) => setTimeout(r, 100));
    }
    result.start_time = video.currentTime;
    const until = Date.now() + seconds * 1000;
    let lastTime = video.currentTime;
    let lastAdvance = Date.now();
    let ticks = 0;
    while (Date.now() < until && result.fatal.length === 0) {
      ticks += 1;
      await new Promise((r) => setTimeout(r, 100));
      if (video.currentTime !== lastTime) {
        lastTime = video.currentTime;
        lastAdvance = Date.now();
      } else {
        result.longest_stall_ms = Math.max(result.longest_stall_ms, Date.now() - lastAdvance);
      }
      const date = playingDate();
      if (date && ticks % 10 === 0) result.latencies_ms.push(Date.now() - date.getTime());
    }
    result.end_time = video.currentTime;
    destroy();
    return result;
  }, { player, url, seconds: Number(seconds) });
}

try {
  const results = await Promise.all(urls.map(play));
  console.log(JSON.stringify(results));
} finally {
  await browser.close();
}
