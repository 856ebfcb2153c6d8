// Drives the web console (/console/) in headless Chromium as a user would, and fails (exit 1)
// at the first step that does not happen. Every page is photographed at a desktop's and at a
// phone's width into SCREENSHOTS, and checked by axe-core (WCAG 2 A/AA rules).
//
// Usage: node console.mjs path BASE_URL SCREENSHOTS
//   sign in with the keyboard, create a channel, rename it, publish to the server URL and stream key the
//   page shows (ffmpeg, started here), see the preview play with its latency and the bitrate
//   graph move, stop the stream, read the session's events, play its recording (the caller
//   made a recording configuration), create a private channel, generate
//   a key pair and mint a token (printed for the caller to check), delete both channels.
// Usage: node console.mjs demo BASE_URL SCREENSHOTS LINK
//   open the demo channel's page at the start-up banner's link, sign in, and see it play.
// Prints one JSON object of what was seen on stdout.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

// (`demo` mode: the link to a channel's page, and that channel's name: `demo` unless given.)
const [mode, base, screenshots, demoLink, channelName = 'demo'] = process.argv.slice(2);
const here = dirname(fileURLToPath(import.meta.url));
const axeSource = readFileSync(join(here, 'node_modules/axe-core/axe.min.js'), 'utf8');
mkdirSync(screenshots, { recursive: true });
const seen = { screenshots: [], accessibility: {} };
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--autoplay-policy=no-user-gesture-required',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: DESKTOP, ignoreHTTPSErrors: true });
const page = await context.newPage();
const pageErrors = [];
page.on('pageerror', (error) => pageErrors.push(String(error)));
// (A playlist or part that fails to load as a stream ends is the player's business, not an error
// of the console's.)
page.on('console', (message) => {
  if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) pageErrors.push(message.text());
});
let publisher = null;

function fail(message) {
  throw new Error(message);
}

/** Waits until `predicate` (run in the page) is true, at most `seconds`. */
async function until(what, seconds, predicate, arg) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: seconds * 1000, polling: 250 });
  } catch {
    const status = await page.locator('#status').innerText().catch(() => '');
    const alerts = await page.locator('[role=alert]').allInnerTexts().catch(() => []);
    fail(`${what}: not within ${seconds} s (status: ${status || '—'}; alerts: ${alerts.join(' | ') || '—'}; page errors: ${pageErrors.join(' | ') || '—'})`);
  }
}

/** A photograph of the page at both widths, and its accessibility check. */
async function capture(name) {
  for (const [width, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    await page.setViewportSize(viewport);
    await page.waitForTimeout(200);
    const file = join(screenshots, `${name}-${width}.png`);
    await page.screenshot({ path: file, fullPage: true });
    seen.screenshots.push(file);
    // Nothing may stick out sideways at a phone's width.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    if (overflow > 1) fail(`${name} at ${width} width is ${overflow} px wider than the screen`);
  }
  await page.setViewportSize(DESKTOP);
  // (Evaluated over the DevTools protocol: the console's Content-Security-Policy forbids inline scripts.)
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa'] } });
    return result.violations.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')}`);
  });
  seen.accessibility[name] = violations;
  if (violations.length) fail(`accessibility of ${name}: ${violations.join('; ')}`);
}

async function signIn() {
  await page.goto(`${base}/console/`);
  await page.getByLabel('Access key ID').waitFor();
  await capture('sign-in');
  // With the keyboard only: type, Tab to the next field, Enter submits.
  await page.getByLabel('Access key ID').focus();
  await page.keyboard.press('Control+A');
  await page.keyboard.type('test');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Control+A');
  await page.keyboard.type('test');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Control+A');
  await page.keyboard.type('us-west-2');
  await page.keyboard.press('Enter');
}

/** The figure's points and last value. */
const figure = (id) => page.evaluate((id) => {
  const element = document.getElementById(id);
  return element ? { points: Number(element.dataset.points), last: Number(element.dataset.last || 0) } : null;
}, id);

/** How far the preview has played, and its picture's size. */
const preview = () => page.evaluate(() => {
  const video = document.getElementById('preview');
  return { time: video.currentTime, width: video.videoWidth, frames: video.getVideoPlaybackQuality().totalVideoFrames };
});

async function watchPreview(seconds) {
  await until('the preview plays', 40, () => {
    const video = document.getElementById('preview');
    return video && video.videoWidth > 0 && video.currentTime > 0.5;
  });
  const first = await preview();
  await page.waitForTimeout(seconds * 1000);
  const second = await preview();
  if (second.time - first.time < seconds * 0.7) fail(`the preview played ${(second.time - first.time).toFixed(2)} s in ${seconds} s`);
  await until('the latency is shown', 10, () => /Latency: \d/.test(document.getElementById('latency').textContent));
  return { played: second.time - first.time, width: second.width, latency: await page.locator('#latency').innerText() };
}

/** Starts ffmpeg publishing to the server URL and stream key the channel's page shows. */
async function startPublisher() {
  const server = await page.getByLabel('Server (RTMPS)').inputValue();
  await page.getByRole('button', { name: 'Show' }).first().click();
  const streamKey = await page.getByLabel('Stream key').inputValue();
  if (!/^rtmps:\/\/.+\/app\/$/.test(server)) fail(`server URL ${server}`);
  if (!streamKey.startsWith('sk_')) fail(`stream key ${streamKey}`);
  const command = await page.locator('#ffmpeg-command').getAttribute('data-command');
  if (!command.includes(`${server}${streamKey}`)) fail(`the ffmpeg command does not publish to the server and key shown: ${command}`);
  publisher = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440',
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-g', '30', '-b:v', '800k',
    '-c:a', 'aac', '-b:a', '96k', '-f', 'flv', `${server}${streamKey}`], { stdio: ['ignore', 'ignore', 'ignore'] });
  return server;
}

/** Waits for the publisher to be cut off (Stop stream), at most 10 s. */
async function publisherStops() {
  const exited = await new Promise((resolve) => {
    if (publisher.exitCode !== null) return resolve(true);
    const timer = setTimeout(() => resolve(false), 10000);
    publisher.on('exit', () => { clearTimeout(timer); resolve(true); });
  });
  if (!exited) fail('ffmpeg still publishes after Stop stream');
  publisher = null;
}

async function path() {
  await signIn();
  await until('the channels page', 15, () => document.querySelector('h1')?.textContent === 'Channels');
  await capture('channels-empty');

  // Create a channel with the form.
  await page.getByLabel('Name').fill('console-new');
  await page.getByLabel('Latency mode').selectOption('LOW');
  await page.getByLabel('Channel type').selectOption('BASIC');
  // Recorded with the first recording configuration the form offers (the caller made one).
  await page.getByLabel('Recording').selectOption({ index: 1 });
  await page.getByRole('button', { name: 'Create channel' }).click();
  await until('the new channel\'s page', 15, () => document.querySelector('h1')?.textContent === 'console-new');
  // Edit it: renamed with the settings form.
  await page.getByLabel('Name').fill('console-test');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await until('the channel is renamed', 15, () => document.querySelector('h1')?.textContent === 'console-test');
  seen.channelArn = await page.locator('main code').first().innerText();

  // Publish where the page says.
  seen.server = await startPublisher();
  await until('the channel is shown live', 30, () => /Live/.test(document.getElementById('live-state').textContent));
  seen.preview = await watchPreview(4);
  // The bitrate graph moves: more points, and a bitrate near what ffmpeg sends.
  const before = await figure('graph-bitrate');
  await page.waitForTimeout(2500);
  const after = await figure('graph-bitrate');
  if (!(after.points > before.points && after.last > 100)) fail(`the bitrate graph did not move: ${JSON.stringify([before, after])}`);
  seen.bitrate = after;
  seen.framerate = await figure('graph-framerate');
  seen.viewers = await figure('graph-viewers');
  await capture('channel-live');

  // Stop the stream from the page.
  await page.getByRole('button', { name: 'Stop stream' }).click();
  await until('the channel is shown offline', 20, () => /Not broadcasting/.test(document.getElementById('live-state').textContent));
  await publisherStops();

  // The session and its events.
  await until('the session is listed', 15, () => document.querySelectorAll('#sessions tbody tr').length === 1
    && !/live$/.test(document.querySelector('#sessions tbody tr td:nth-child(2)').textContent));
  await page.locator('#sessions tbody tr button').first().click();
  await until('the session\'s events', 10, () => /Session Ended/.test(document.getElementById('session-details').textContent));
  seen.events = await page.locator('#session-details li').allInnerTexts();

  // The recording of that session, complete, plays from the bucket.
  await until('the recording is listed as complete', 20, () => /complete/.test(document.querySelector('#recordings li.recording')?.textContent || ''));
  seen.recording = await page.locator('#recordings li.recording').first().innerText();
  await page.locator('#recordings li.recording button').first().click();
  await until('the recording plays', 30, () => {
    const video = document.getElementById('recording-player');
    return video && video.videoWidth > 0 && video.currentTime > 1.5;
  });
  seen.recordingThumbnail = await page.evaluate(() => {
    const image = document.querySelector('#recordings li.recording img');
    return image && !image.hidden ? image.naturalWidth : 0;
  });
  await capture('channel-ended');

  // A private channel and a playback token minted in the page.
  await page.getByRole('link', { name: '← Channels' }).click();
  await until('the channels page again', 15, () => document.querySelector('h1')?.textContent === 'Channels' && document.querySelector('tr[data-arn]'));
  await capture('channels');
  await page.getByLabel('Name').fill('console-private');
  await page.getByLabel('Private channel: viewers need a playback token').check();
  await page.getByRole('button', { name: 'Create channel' }).click();
  await until('the private channel\'s page', 15, () => document.querySelector('h1')?.textContent === 'console-private');
  seen.privateArn = await page.locator('main code').first().innerText();
  await page.getByRole('button', { name: 'Generate a key pair here' }).click();
  await until('the key pair is imported', 15, () => /BEGIN PRIVATE KEY/.test(document.querySelector('textarea[name=privateKey]').value));
  await page.getByRole('button', { name: 'Mint token' }).click();
  await until('a token is minted', 10, () => document.querySelector('input[name=tokenUrl]'));
  seen.tokenUrl = await page.locator('input[name=tokenUrl]').inputValue();
  // The preview plays the private channel with the token the page minted.
  await startPublisher();
  await until('the private channel is shown live', 30, () => /Live/.test(document.getElementById('live-state').textContent));
  seen.privatePreview = await watchPreview(2);
  await capture('channel-private');
  await page.getByRole('button', { name: 'Stop stream' }).click();
  await publisherStops();

  // Delete both channels from their pages.
  for (const [name, arn] of [['console-private', seen.privateArn], ['console-test', seen.channelArn]]) {
    await page.goto(`${base}/console/#/channel/${encodeURIComponent(arn)}`);
    await until(`${name}'s page`, 15, (name) => document.querySelector('h1')?.textContent === name, name);
    await page.getByRole('button', { name: 'Delete channel' }).click();
    await page.getByRole('button', { name: 'Yes, delete' }).click();
    await until(`${name} is deleted`, 15, (arn) => document.querySelector('h1')?.textContent === 'Channels'
      && !document.querySelector(`tr[data-arn="${arn}"]`), arn);
  }
}

async function demo() {
  await page.goto(demoLink);
  await page.getByLabel('Access key ID').waitFor();
  // The form offers the local-development pair: signing in is one press.
  await page.getByRole('button', { name: 'Sign in' }).click();
  await until(`the ${channelName} channel's page`, 15, (name) => document.querySelector('h1')?.textContent === name, channelName);
  seen.preview = await watchPreview(5);
  await capture(channelName);
}

let exitCode = 0;
try {
  if (mode === 'path') await path();
  else if (mode === 'demo') await demo();
  else fail(`unknown mode ${mode}: path or demo`);
  if (pageErrors.length) fail(`the page reported errors: ${pageErrors.join(' | ')}`);
} catch (error) {
  seen.error = String(error.message || error);
  exitCode = 1;
  await page.screenshot({ path: join(screenshots, `failure-${mode}.png`), fullPage: true }).catch(() => {});
} finally {
  publisher?.kill('SIGKILL');
  seen.pageErrors = pageErrors;
  await browser.close();
}
console.log(JSON.stringify(seen));
process.exit(exitCode);
