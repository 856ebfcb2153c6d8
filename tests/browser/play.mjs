// Plays HLS URLs with a real web player in headless Chromium and reports, per URL, whether
// playback ran and how far behind the broadcaster it ran, measured from the picture itself.
//
// The publisher burns the wall clock into every frame (crates/openivs/tests/players/clock.rs):
// CLOCK_BITS boxes of CLOCK_BOX px along the top edge, box k white when bit k of
// floor(epoch_ms / 10) is set. The page reads them back from the playing video every
// SAMPLE_MS: the latency is now minus the time in the picture, and the picture's own progress
// tells stalls apart from playback (currentTime is reported too, players' own latency estimates
// beside it).
//
// Players: hls.js, shaka (Shaka Player), videojs (video.js with its VHS engine; videojs-segments
// is the same with VHS's part loading off), ivs (the
// Amazon IVS Player Web SDK, bundled here with esbuild; its wasm worker is served from the
// page's origin, as the SDK requires).
// Usage: node play.mjs PLAYER SECONDS URL [URL…]   → prints one JSON array on stdout.
// A URL may instead be a JSON object {"url": …, "origin": "http://allowed.example"}: its page is
// then served from that origin (private channels' and restriction policies' origin rules).
// Each result lists the responses of the stream's server as [epoch ms, status, file name,
// Access-Control-Allow-Origin].
// PLAY_HLS_CONFIG, PLAY_SHAKA_CONFIG and PLAY_VHS_CONFIG (JSON) are merged into hls.js's,
// Shaka's and video.js VHS's configurations; PLAY_THROTTLE ({"fast_kbps": …, "after_ms": …,
// "kbps": …}) limits the page's network to fast_kbps from the start (if given), then to kbps that
// long after its picture starts moving (Chrome DevTools Protocol Network.emulateNetworkConditions). Every player's rendition switches are reported (`levels`:
// [epoch ms, height, bitrate], the first being the start level).
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

const [player, seconds, ...urls] = process.argv.slice(2);
const here = dirname(fileURLToPath(import.meta.url));
const ORIGIN = 'http://localhost:9';
const ivsAssets = join(here, 'node_modules/amazon-ivs-player/dist/assets');

function playerSource(name) {
  const files = {
    'hls.js': 'node_modules/hls.js/dist/hls.min.js',
    // PLAY_DEBUG: Shaka's debug build, which logs.
    shaka: process.env.PLAY_DEBUG
      ? 'node_modules/shaka-player/dist/shaka-player.compiled.debug.js'
      : 'node_modules/shaka-player/dist/shaka-player.compiled.js',
    videojs: 'node_modules/video.js/dist/video.min.js',
    'videojs-segments': 'node_modules/video.js/dist/video.min.js',
  };
  if (files[name]) return readFileSync(join(here, files[name]), 'utf8');
  if (name === 'ivs') {
    // The SDK's npm build is CommonJS: bundle it (with its dependencies) into one script.
    const built = buildSync({
      stdin: { contents: "window.IVSPlayer = require('amazon-ivs-player');", resolveDir: here },
      bundle: true,
      format: 'iife',
      platform: 'browser',
      write: false,
      define: { 'process.env.NODE_ENV': '"production"', global: 'window' },
      logLevel: 'error',
    });
    return built.outputFiles[0].text;
  }
  throw new Error(`unknown player ${name}: one of hls.js, shaka, videojs, videojs-segments, ivs`);
}
const source = playerSource(player);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
    // The page's origin is served by playwright, so Chromium cannot tell it is local too: let it
    // reach the server on 127.0.0.1 (Local Network Access would refuse the page otherwise).
    '--disable-features=LocalNetworkAccessChecks',
  ],
});

// The test page's origin exists only inside the browser: every request to it is answered here.
async function servePage(page, origin) {
  await page.route(`${origin}/**`, (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path === '/') {
      return route.fulfill({
        contentType: 'text/html',
        body: '<!doctype html><video id="v" muted autoplay playsinline></video><script src="/player.js"></script>',
      });
    }
    if (path === '/player.js') return route.fulfill({ contentType: 'text/javascript', body: source });
    if (path.startsWith('/ivs/')) {
      const name = path.slice('/ivs/'.length).replace(/[^A-Za-z0-9.-]/g, '');
      const type = name.endsWith('.wasm') ? 'application/wasm' : 'text/javascript';
      return route.fulfill({ contentType: type, body: readFileSync(join(ivsAssets, name)) });
    }
    return route.fulfill({ status: 404, body: 'not found' });
  });
}

async function play(target) {
  const { url, origin } = target.startsWith('{') ? JSON.parse(target) : { url: target, origin: ORIGIN };
  // (A server with --http-tls uses its own certificate: the tests trust it this way.)
  const page = await browser.newPage({ ignoreHTTPSErrors: true });
  const responses = [];
  page.on('response', (response) => {
    if (!response.url().startsWith(origin)) {
      const allowOrigin = response.headers()['access-control-allow-origin'] || null;
      const length = Number(response.headers()['content-length'] || 0);
      responses.push([Date.now(), response.status(), new URL(response.url()).pathname.split('/').pop(), allowOrigin, length]);
    }
  });
  // PLAY_DEBUG=1 prints the page's console and its failed requests (on stderr).
  if (process.env.PLAY_DEBUG) {
    const t0 = Date.now();
    page.on('console', (message) => console.error(Date.now() - t0, message.type(), message.text().slice(0, 400)));
    page.on('requestfailed', (request) => console.error(Date.now() - t0, 'failed', request.url(), request.failure().errorText));
    page.on('request', (request) => console.error(Date.now() - t0, 'request', request.url()));
  }
  await servePage(page, origin);
  // The HTTP versions the page's requests to the stream's server went over (h2, http/1.1).
  const protocols = new Set();
  const watcher = await page.context().newCDPSession(page);
  await watcher.send('Network.enable');
  watcher.on('Network.responseReceived', (event) => {
    const { url } = event.response;
    if (url.startsWith('http') && !url.startsWith(origin)) protocols.add(event.response.protocol);
  });
  let throttledAt = null;
  let throttle = null;
  // The page calls this once its picture moves; the throttle counts from then, so that every
  // player has played on the fast link for the same time however slowly it started.
  let cdp = null;
  // Limits the page's network to `kbps` (download and upload) with 20 ms of latency.
  const limitNetwork = (kbps) => {
    const bytesPerSecond = (kbps * 1000) / 8;
    return cdp.send('Network.emulateNetworkConditions', {
      offline: false,
      latency: 20,
      downloadThroughput: bytesPerSecond,
      uploadThroughput: bytesPerSecond,
    });
  };
  if (process.env.PLAY_THROTTLE) {
    cdp = await page.context().newCDPSession(page);
    await cdp.send('Network.enable');
    // The fast link is a real link too: over bare loopback players measure hundreds of
    // Mbit/s, an estimate their moving averages take many seconds to forget once it slows.
    const { fast_kbps: fastKbps } = JSON.parse(process.env.PLAY_THROTTLE);
    if (fastKbps) await limitNetwork(fastKbps);
  }
  await page.exposeFunction('pictureStarted', () => {
    if (cdp === null || throttle !== null) return;
    const { after_ms: afterMs, kbps } = JSON.parse(process.env.PLAY_THROTTLE);
    throttle = setTimeout(async () => {
      // (From the moment it is asked for: the network may slow before the answer.)
      const requestedAt = Date.now();
      try {
        await limitNetwork(kbps);
        throttledAt = requestedAt;
      } catch {
        // (The page closed first: no throttled_at, which the test reports.)
      }
    }, afterMs);
  });
  await page.goto(`${origin}/`);
  const result = await page.evaluate(async ({ player, url, seconds, debug, configs }) => {
    const CLOCK_BITS = 20;
    const CLOCK_BOX = 24;
    const SAMPLE_MS = 50;
    let video = document.getElementById('v');
    const result = {
      url,
      player,
      levels: [],
      level_decisions: [],
      supported: true,
      mse_h264_aac: MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001f,mp4a.40.2"'),
      fatal: [],
      startup_ms: null,
      start_time: null,
      end_time: null,
      longest_stall_ms: 0,
      // The longest time currentTime did not advance (a frozen picture may still be playing).
      longest_time_stall_ms: 0,
      // Each time currentTime stood still for 300 ms or more: [epoch ms it started, ms].
      time_stalls: [],
      // Each time the picture stood still for 500 ms or more: [epoch ms it started, ms].
      picture_stalls: [],
      // Video frames the page decoded (shown or dropped) while it was watched: far fewer than
      // the stream holds means the browser was starved of CPU, not of media.
      watched_frames: null,
      picture_seconds: 0,
      last_advance_at: null,
      picture_latencies_ms: [],
      player_latencies_ms: [],
      live_low_latency: null,
      // Timed-metadata cues as the player raised them: {at (epoch ms), text, owner}.
      metadata: [],
    };
    // Each player: start it, report fatal errors, and give its own latency estimate (ms).
    let playerLatency = () => null;
    let watchCues = () => {};
    let destroy = () => {};
    let debugTrace = () => {};
    if (player === 'hls.js') {
      result.supported = window.Hls.isSupported();
      if (!result.supported) return result;
      const hls = new window.Hls({ lowLatencyMode: true, ...configs.hls });
      hls.on(window.Hls.Events.ERROR, (_event, data) => {
        if (data.fatal) result.fatal.push(`${data.type}: ${data.details}`);
        else if (debug) (result.errors = result.errors || []).push([Date.now(), data.details, video.currentTime]);
      });
      if (debug) {
        // Where hls.js thinks it is: [epoch ms, currentTime, latency, target latency, live sync
        // position, buffered end, playing date (epoch ms)].
        result.hls_trace = [];
        result.hls_events = [];
        const note = (name, detail) => result.hls_events.push([Date.now(), name, detail, video.currentTime]);
        for (const name of ['LEVEL_LOADED', 'FRAG_LOADED', 'FRAG_PARSED', 'FRAG_BUFFERED', 'BUFFER_APPENDED']) {
          hls.on(window.Hls.Events[name], (_event, data) => note(name, data.frag ? `${data.frag.sn}.${data.part ? data.part.index : '-'} ${data.frag.start.toFixed(3)}` : (data.details ? `${data.details.edge.toFixed(3)} live sync ${hls.liveSyncPosition}` : '')));
        }
        for (const name of ['loadedmetadata', 'seeking', 'seeked', 'canplay', 'playing']) {
          video.addEventListener(name, () => note(name, ''));
        }
        debugTrace = () => result.hls_trace.push([
          Date.now(), video.currentTime, hls.latency, hls.targetLatency, hls.liveSyncPosition,
          video.buffered.length ? video.buffered.end(video.buffered.length - 1) : null,
          hls.playingDate ? hls.playingDate.getTime() : null,
        ]);
      }
      // (The decision to switch, before the new rendition's first fragment is buffered.)
      hls.on(window.Hls.Events.LEVEL_SWITCHING, (_event, data) => {
        result.level_decisions.push([Date.now(), data.height, Math.round(hls.bandwidthEstimate)]);
      });
      // Each fragment or part as it arrived: [epoch ms, level, sn, part (-1: whole segment),
      // bytes, ms from request to first byte, ms from first byte to last, estimate after].
      result.fragments = [];
      hls.on(window.Hls.Events.FRAG_LOADED, (_event, data) => {
        const stats = (data.part || data.frag).stats;
        result.fragments.push([
          Date.now(), data.frag.level, data.frag.sn, data.part ? data.part.index : -1, stats.loaded,
          Math.round(stats.loading.first - stats.loading.start), Math.round(stats.loading.end - stats.loading.first),
          Math.round(hls.bandwidthEstimate),
        ]);
      });
      hls.on(window.Hls.Events.LEVEL_SWITCHED, (_event, data) => {
        const level = hls.levels[data.level];
        if (level) result.levels.push([Date.now(), level.height, level.bitrate]);
      });
      hls.on(window.Hls.Events.MANIFEST_PARSED, () => {
        result.level_heights = hls.levels.map((level) => level.height);
      });
      // hls.js puts ID3 frames on a metadata text track as cues (value: {key, info, data}).
      // Each is recorded when it is added to the track (`added_at`) and when it becomes active
      // (`at`, as an application listening to cuechange sees it; a cue the player seeks over
      // never does).
      const cueRecords = new Map();
      const recordCues = (track) => {
        for (const cue of Array.from(track.cues || [])) {
          if (!cue.value || cue.value.key !== 'TXXX' || cueRecords.has(cue)) continue;
          const record = { added_at: Date.now(), at: null, text: cue.value.data, owner: cue.value.info };
          cueRecords.set(cue, record);
          result.metadata.push(record);
        }
        for (const cue of Array.from(track.activeCues || [])) {
          const record = cueRecords.get(cue);
          if (record && record.at === null) record.at = Date.now();
        }
      };
      video.textTracks.addEventListener('addtrack', (event) => {
        const track = event.track;
        if (track.kind !== 'metadata') return;
        track.mode = 'hidden';
        if (debug) result.metadata_track = track;
        track.addEventListener('cuechange', () => recordCues(track));
        watchCues = () => recordCues(track);
      });
      hls.loadSource(url);
      hls.attachMedia(video);
      playerLatency = () => (hls.playingDate ? Date.now() - hls.playingDate.getTime() : null);
      destroy = () => hls.destroy();
    } else if (player === 'shaka') {
      window.shaka.polyfill.installAll();
      if (debug && window.shaka.log.setLevel) window.shaka.log.setLevel(window.shaka.log.Level.DEBUG);
      result.supported = window.shaka.Player.isBrowserSupported();
      if (!result.supported) return result;
      const shakaPlayer = new window.shaka.Player();
      await shakaPlayer.attach(video);
      shakaPlayer.configure({ streaming: { lowLatencyMode: true }, ...configs.shaka });
      let shakaHeight = null;
      const shakaLevel = () => {
        const active = shakaPlayer.getVariantTracks().find((track) => track.active);
        if (active && active.height !== shakaHeight) {
          shakaHeight = active.height;
          result.levels.push([Date.now(), active.height, active.bandwidth]);
        }
      };
      shakaPlayer.addEventListener('adaptation', shakaLevel);
      shakaPlayer.addEventListener('variantchanged', shakaLevel);
      shakaPlayer.addEventListener('trackschanged', shakaLevel);
      shakaPlayer.addEventListener('error', (event) => {
        if (event.detail.severity === window.shaka.util.Error.Severity.CRITICAL) {
          result.fatal.push(`shaka ${event.detail.code}`);
        }
      });
      try {
        await shakaPlayer.load(url);
      } catch (error) {
        result.fatal.push(`shaka load ${error.code}${error.code ? "" : ` ${error}`}`);
      }
      playerLatency = () => {
        const date = shakaPlayer.getPlayheadTimeAsDate();
        return date ? Date.now() - date.getTime() : null;
      };
      destroy = () => shakaPlayer.destroy();
    } else if (player === 'videojs' || player === 'videojs-segments') {
      if (debug) window.videojs.log.level('debug');
      // videojs-segments: VHS with its low-latency (part) loading off, as the README advises
      // for MPEG-TS low-latency channels (VHS cannot transmux parts that start mid-GOP).
      const vhs = { ...(player === 'videojs-segments' ? { llhls: false } : {}), ...configs.vhs };
      const vjs = window.videojs(video, { autoplay: true, muted: true, liveui: true, html5: { vhs } });
      vjs.on('error', () => {
        const error = vjs.error();
        result.fatal.push(`videojs ${error && error.code}: ${error && error.message}`);
      });
      vjs.src({ src: url, type: 'application/x-mpegURL' });
      video = vjs.tech(true).el();
      let vhsHeight = null;
      vjs.on('loadedmetadata', () => {
        const engine = vjs.tech(true).vhs;
        if (!engine) return;
        const note = () => {
          const media = engine.playlists.media();
          const attributes = (media && media.attributes) || {};
          const height = attributes.RESOLUTION ? attributes.RESOLUTION.height : 0;
          if (height !== vhsHeight) {
            vhsHeight = height;
            result.levels.push([Date.now(), height, attributes.BANDWIDTH || 0]);
          }
        };
        note();
        engine.playlists.on('mediachange', note);
      });
      playerLatency = () => {
        const seekable = vjs.seekable();
        return seekable.length ? (seekable.end(seekable.length - 1) - vjs.currentTime()) * 1000 : null;
      };
      destroy = () => vjs.dispose();
    } else if (player === 'ivs') {
      const IVS = window.IVSPlayer;
      result.supported = IVS.isPlayerSupported;
      if (!result.supported) return result;
      const ivsPlayer = IVS.create({
        wasmWorker: new URL('/ivs/amazon-ivs-wasmworker.min.js', location.href).href,
        wasmBinary: new URL('/ivs/amazon-ivs-wasmworker.min.wasm', location.href).href,
      });
      ivsPlayer.attachHTMLVideoElement(video);
      ivsPlayer.addEventListener(IVS.PlayerEventType.ERROR, (error) => {
        result.fatal.push(`ivs ${error.type} ${error.code} (${error.source}): ${error.message}`);
      });
      ivsPlayer.addEventListener(IVS.PlayerEventType.QUALITY_CHANGED, (quality) => {
        result.levels.push([Date.now(), quality.height, quality.bitrate]);
      });
      ivsPlayer.addEventListener(IVS.PlayerEventType.TEXT_METADATA_CUE, (cue) => {
        result.metadata.push({ at: Date.now(), text: cue.text, owner: cue.owner, description: cue.description });
      });
      ivsPlayer.setMuted(true);
      ivsPlayer.setAutoplay(true);
      ivsPlayer.load(url);
      ivsPlayer.play();
      playerLatency = () => ivsPlayer.getLiveLatency() * 1000;
      destroy = () => {
        result.live_low_latency = ivsPlayer.isLiveLowLatency();
        ivsPlayer.delete();
      };
    }
    video.play().catch(() => {});

    // Reads the clock in the picture on screen: floor(epoch_ms / 10) mod 2^CLOCK_BITS, or null
    // before the first frame.
    const canvas = document.createElement('canvas');
    canvas.width = CLOCK_BITS * CLOCK_BOX;
    canvas.height = CLOCK_BOX;
    const context = canvas.getContext('2d', { willReadFrequently: true });
    const readClock = () => {
      if (!video.videoWidth) return null;
      // The boxes are laid out for a 640-pixel-wide picture; scale with the real one.
      const scale = video.videoWidth / 640;
      context.drawImage(video, 0, 0, canvas.width * scale, canvas.height * scale, 0, 0, canvas.width, canvas.height);
      const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
      let value = 0;
      for (let bit = 0; bit < CLOCK_BITS; bit += 1) {
        const offset = ((CLOCK_BOX >> 1) * canvas.width + bit * CLOCK_BOX + (CLOCK_BOX >> 1)) * 4;
        if (pixels[offset] > 128) value += 2 ** bit;
      }
      return value;
    };
    // How far the clock runs from `from` to `to` (in its 10 ms units, across its wrap).
    const clockPeriod = 2 ** CLOCK_BITS;
    const clockAhead = (from, to) => (((to - from) % clockPeriod) + clockPeriod) % clockPeriod;
    const latencyOf = (clock, now) => clockAhead(clock, Math.floor(now / 10)) * 10;

    // Wait for the picture to start moving (at most 20 s), let the player settle for SETTLE_MS
    // (players seek to their live position and adjust their buffer just after starting), then
    // watch it for the given time.
    const SETTLE_MS = 3000;
    const started = Date.now();
    let firstClock = readClock();
    while (Date.now() - started < 20000 && result.fatal.length === 0) {
      await new Promise((r) => setTimeout(r, SAMPLE_MS));
      debugTrace();
      const clock = readClock();
      if (clock !== null && firstClock !== null && clock !== firstClock && video.currentTime > 0) break;
      if (firstClock === null) firstClock = clock;
    }
    result.startup_ms = Date.now() - started;
    await window.pictureStarted();
    for (const settleUntil = Date.now() + SETTLE_MS; Date.now() < settleUntil; debugTrace()) {
      await new Promise((r) => setTimeout(r, SAMPLE_MS));
    }
    result.start_time = video.currentTime;
    const decodedFrames = () => (video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality().totalVideoFrames : null);
    const framesAtStart = decodedFrames();
    const until = Date.now() + seconds * 1000;
    let lastClock = readClock();
    let lastChange = Date.now();
    let lastTime = video.currentTime;
    let lastTimeChange = Date.now();
    let pictureSeconds = 0;
    let samples = 0;
    while (Date.now() < until && result.fatal.length === 0) {
      samples += 1;
      await new Promise((r) => setTimeout(r, SAMPLE_MS));
      const now = Date.now();
      watchCues();
      if (video.currentTime > lastTime) {
        if (now - lastTimeChange >= 300) result.time_stalls.push([lastTimeChange, now - lastTimeChange]);
        lastTime = video.currentTime;
        lastTimeChange = now;
      } else {
        result.longest_time_stall_ms = Math.max(result.longest_time_stall_ms, now - lastTimeChange);
      }
      const clock = readClock();
      if (clock === null) continue;
      if (clock !== lastClock) {
        if (now - lastChange >= 500) result.picture_stalls.push([lastChange, now - lastChange]);
        // A forward step of the picture's clock (a misread or a jump back counts for nothing).
        const step = lastClock === null ? 0 : clockAhead(lastClock, clock);
        if (step > 0 && step < 500) pictureSeconds += step / 100;
        lastClock = clock;
        lastChange = now;
        result.last_advance_at = now;
      } else {
        result.longest_stall_ms = Math.max(result.longest_stall_ms, now - lastChange);
      }
      if (samples % 4 === 0) {
        debugTrace();
        const latency = latencyOf(clock, now);
        if (latency < 60000) result.picture_latencies_ms.push(latency);
        const estimate = playerLatency();
        if (estimate !== null && Number.isFinite(estimate)) result.player_latencies_ms.push(Math.round(estimate));
      }
    }
    if (result.metadata_track) {
      const track = result.metadata_track;
      result.metadata_track = Array.from(track.cues || []).map((cue) => [cue.startTime, cue.endTime, cue.value && cue.value.data && cue.value.data.slice(0, 20)]);
    }
    watchCues();
    result.picture_seconds = Math.round(pictureSeconds * 100) / 100;
    result.end_time = video.currentTime;
    // Stalls still going on when the watch ended.
    const ended = Date.now();
    if (ended - lastTimeChange >= 300) result.time_stalls.push([lastTimeChange, ended - lastTimeChange]);
    if (ended - lastChange >= 500) result.picture_stalls.push([lastChange, ended - lastChange]);
    const framesAtEnd = decodedFrames();
    if (framesAtStart !== null && framesAtEnd !== null) result.watched_frames = framesAtEnd - framesAtStart;
    if (debug) {
      result.buffered = [];
      for (let i = 0; i < video.buffered.length; i += 1) result.buffered.push([video.buffered.start(i), video.buffered.end(i)]);
    }
    destroy();
    return result;
  }, {
    player,
    url,
    seconds: Number(seconds),
    debug: Boolean(process.env.PLAY_DEBUG),
    configs: {
      hls: JSON.parse(process.env.PLAY_HLS_CONFIG || '{}'),
      shaka: JSON.parse(process.env.PLAY_SHAKA_CONFIG || '{}'),
      vhs: JSON.parse(process.env.PLAY_VHS_CONFIG || '{}'),
    },
  });
  clearTimeout(throttle);
  result.responses = responses;
  result.protocols = [...protocols];
  result.throttled_at = throttledAt;
  await page.close();
  return result;
}

try {
  const results = await Promise.all(urls.map(play));
  console.log(JSON.stringify(results));
} finally {
  await browser.close();
}
