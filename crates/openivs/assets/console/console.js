// The openivs console: one page that manages channels through the IVS API on this origin,
// signing each call with the user's credentials (sigv4.js). Views, chosen by the URL's hash:
//   (signed out)          the sign-in form
//   #/channels            the channels, their live state, and a form to create one
//   #/channel/{arn}       one channel: preview with its latency, live figures, how to broadcast
//                         (server URL, stream key, ffmpeg), settings, playback tokens, stream
//                         sessions with their events, recording, deletion
// Credentials live in sessionStorage (this tab only); nothing is sent anywhere but this server.

import { signedHeaders } from './sigv4.js';

const STORAGE_KEY = 'openivs.credentials';
const main = document.getElementById('main');
const statusBox = document.getElementById('status');
const who = document.getElementById('who');
const signOutButton = document.getElementById('sign-out');

let config = { devCredentials: false, defaultRegion: 'us-west-2', rtmpPort: 1935 };
let credentials = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || 'null');
// Timers and players of the view on screen, stopped when the view changes.
let viewCleanup = [];
// Live figures seen while the console is open, per channel ARN: [{ at, video, fps, viewers }].
const history = new Map();
const HISTORY_POINTS = 120;

// ---------------------------------------------------------------------------------------------
// Small DOM helpers.

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'text') element.textContent = value;
    else element.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

let saidAt = 0;
function say(message, kind = 'info') {
  saidAt = Date.now();
  statusBox.replaceChildren(message ? h('p', { class: kind === 'error' ? 'error' : '' }, message) : '');
}

let fieldIds = 0;
/** A labelled form control: the label names it for screen readers and for the tests. */
function field(labelText, control, hint) {
  const id = control.id || `field-${++fieldIds}`;
  control.id = id;
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute('aria-describedby', hintId);
  if (control.type === 'checkbox') {
    return h('div', {}, h('label', { class: 'check', for: id }, control, labelText), hint && h('p', { class: 'hint', id: hintId }, hint));
  }
  return h('div', {}, h('label', { for: id }, labelText), control, hint && h('p', { class: 'hint', id: hintId }, hint));
}

function select(name, options, selected) {
  return h('select', { name }, options.map(([value, text]) => h('option', { value, selected: value === selected }, text)));
}

async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    say(`${what} copied.`);
  } catch {
    say(`Select the ${what.toLowerCase()} and copy it (this browser did not allow the console to).`, 'error');
  }
}

/** A read-only value with a Copy button; `secret` hides it until Show is pressed. */
function copyRow(labelText, value, { secret = false, name } = {}) {
  const input = h('input', { type: secret ? 'password' : 'text', readonly: true, value, name, spellcheck: 'false' });
  const buttons = [h('button', { type: 'button', class: 'secondary', onclick: () => copy(value, labelText) }, 'Copy')];
  if (secret) {
    const toggle = h('button', { type: 'button', class: 'secondary', 'aria-pressed': 'false' }, 'Show');
    toggle.addEventListener('click', () => {
      const showing = input.type === 'text';
      input.type = showing ? 'password' : 'text';
      toggle.textContent = showing ? 'Show' : 'Hide';
      toggle.setAttribute('aria-pressed', String(!showing));
    });
    buttons.unshift(toggle);
  }
  const id = `field-${++fieldIds}`;
  input.id = id;
  return h('div', {}, h('label', { for: id }, labelText), h('div', { class: 'copyrow' }, input, ...buttons));
}

const fmtTime = (text) => (text ? new Date(text).toLocaleString() : '—');
const shortArn = (arn) => arn.split('/').pop();

// ---------------------------------------------------------------------------------------------
// The API, signed.

class ApiError extends Error {
  constructor(type, message, status) {
    super(message ? `${type}: ${message}` : type);
    this.type = type;
    this.status = status;
  }
}

async function send(method, path, { query = [], body } = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  const contentType = body === undefined ? undefined : 'application/json';
  const headers = signedHeaders({ method, host: location.host, path, query, body: text, contentType, credentials });
  const search = query.length ? '?' + new URLSearchParams(query).toString() : '';
  let response;
  try {
    response = await fetch(path + search, { method, headers, body: body === undefined ? undefined : text, cache: 'no-store' });
  } catch (error) {
    throw new ApiError('NetworkError', `the server did not answer (${error.message})`, 0);
  }
  const answer = await response.text();
  const json = answer ? JSON.parse(answer) : {};
  if (!response.ok) {
    const type = (response.headers.get('x-amzn-ErrorType') || json.__type || `HTTP ${response.status}`).split(':')[0];
    const error = new ApiError(type, json.message || json.Message || '', response.status);
    if (['UnrecognizedClientException', 'InvalidSignatureException', 'AccessDeniedException'].includes(type) && credentials) {
      if (type !== 'AccessDeniedException') signOut(`Signed out: ${error.message}`);
    }
    throw error;
  }
  return json;
}

const api = (operation, body = {}) => send('POST', `/${operation}`, { body });

/** Every page of a List operation. */
async function listAll(operation, body, key) {
  const items = [];
  let nextToken;
  do {
    const page = await api(operation, { ...body, ...(nextToken ? { nextToken } : {}) });
    items.push(...(page[key] || []));
    nextToken = page.nextToken;
  } while (nextToken);
  return items;
}

/** The live figures of the account's live channels, by channel ARN. */
async function liveChannels() {
  const answer = await send('GET', '/_openivs/live-channels');
  const byArn = new Map(answer.channels.map((c) => [c.channelArn, c]));
  const at = Date.now();
  for (const [arn, live] of byArn) {
    const points = history.get(arn) || [];
    points.push({ at, video: live.IngestVideoBitrate, fps: live.IngestFramerate, viewers: live.ConcurrentViews });
    if (points.length > HISTORY_POINTS) points.shift();
    history.set(arn, points);
  }
  return byArn;
}

// ---------------------------------------------------------------------------------------------
// Signing in and out.

function signOut(message) {
  credentials = null;
  sessionStorage.removeItem(STORAGE_KEY);
  location.hash = '#/channels';
  render();
  if (message) say(message, 'error');
}
signOutButton.addEventListener('click', () => signOut());

function signInView() {
  const accessKeyId = h('input', { type: 'text', name: 'accessKeyId', autocomplete: 'username', required: true, spellcheck: 'false', value: config.devCredentials ? 'test' : '' });
  const secret = h('input', { type: 'password', name: 'secretAccessKey', autocomplete: 'current-password', required: true, value: config.devCredentials ? 'test' : '' });
  const region = h('input', { type: 'text', name: 'region', required: true, value: config.defaultRegion, pattern: '[a-z0-9\\-]+' });
  const error = h('p', { class: 'error-text', role: 'alert' });
  const form = h('form', { class: 'card signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in to openivs'),
    h('p', { class: 'hint' }, 'Use the AWS credentials this server accepts, as for the AWS CLI. Channels belong to the credentials’ account and to the region.'),
    config.devCredentials && h('p', { class: 'hint' }, 'This server accepts the local-development pair test / test, filled in below.'),
    field('Access key ID', accessKeyId),
    field('Secret access key', secret, 'Kept in this browser tab only; every request is signed here with AWS Signature Version 4.'),
    field('Region', region),
    error,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Sign in')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    credentials = { accessKeyId: accessKeyId.value.trim(), secretAccessKey: secret.value, region: region.value.trim() };
    try {
      await api('ListChannels', { maxResults: 1 });
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify(credentials));
      say('');
      render();
    } catch (failure) {
      credentials = null;
      error.textContent = `Could not sign in: ${failure.message}`;
    }
  });
  main.replaceChildren(form);
}

// ---------------------------------------------------------------------------------------------
// Channel forms (create and edit share one).

const LATENCY = [['LOW', 'Low latency (LL-HLS, about 2 s)'], ['NORMAL', 'Standard latency']];
const TYPES = [['STANDARD', 'STANDARD (transcodes a ladder)'], ['BASIC', 'BASIC (source only)'], ['ADVANCED_SD', 'ADVANCED_SD'], ['ADVANCED_HD', 'ADVANCED_HD']];
const CONTAINERS = [['TS', 'MPEG-TS'], ['FRAGMENTED_MP4', 'Fragmented MP4']];

function channelForm(channel, recordingConfigurations, onSubmit, submitText) {
  const name = h('input', { type: 'text', name: 'name', maxlength: '128', pattern: '[a-zA-Z0-9_\\-]*', value: channel.name || '', spellcheck: 'false' });
  const latency = select('latencyMode', LATENCY, channel.latencyMode || 'LOW');
  const type = select('type', TYPES, channel.type || 'STANDARD');
  const container = select('containerFormat', CONTAINERS, channel.containerFormat || 'TS');
  const recording = select('recordingConfigurationArn',
    [['', 'Not recorded'], ...recordingConfigurations.map((r) => [r.arn, r.name || shortArn(r.arn)])],
    channel.recordingConfigurationArn || '');
  const authorized = h('input', { type: 'checkbox', name: 'authorized', checked: !!channel.authorized });
  const insecure = h('input', { type: 'checkbox', name: 'insecureIngest', checked: !!channel.insecureIngest });
  const error = h('p', { class: 'error-text', role: 'alert' });
  const button = h('button', { type: 'submit' }, submitText);
  const form = h('form', {},
    field('Name', name, 'Letters, digits, - and _; may be empty.'),
    field('Latency mode', latency),
    field('Channel type', type),
    field('Container format', container),
    field('Recording', recording, recordingConfigurations.length ? null : 'No recording configurations in this region yet (aws ivs create-recording-configuration).'),
    field('Private channel: viewers need a playback token', authorized),
    field('Allow plain RTMP ingest (insecureIngest)', insecure),
    error,
    h('div', { class: 'actions' }, button));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    error.textContent = '';
    try {
      await onSubmit({
        name: name.value,
        latencyMode: latency.value,
        type: type.value,
        containerFormat: container.value,
        recordingConfigurationArn: recording.value,
        authorized: authorized.checked,
        insecureIngest: insecure.checked,
      });
    } catch (failure) {
      error.textContent = failure.message;
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

// ---------------------------------------------------------------------------------------------
// The channels.

function liveBadge(live) {
  if (!live) return h('span', { class: 'badge offline' }, 'Offline');
  const starving = live.health === 'STARVING';
  return h('span', { class: `badge ${starving ? 'starving' : 'live'}` }, starving ? 'Live · starving' : 'Live');
}

async function channelsView() {
  main.replaceChildren(h('h1', {}, 'Channels'), h('p', {}, 'Loading…'));
  const [channels, recordingConfigurations, live] = await Promise.all([
    listAll('ListChannels', {}, 'channels'),
    listAll('ListRecordingConfigurations', {}, 'recordingConfigurations'),
    liveChannels(),
  ]);
  const rows = channels.map((channel) => {
    const href = `#/channel/${encodeURIComponent(channel.arn)}`;
    return h('tr', { 'data-arn': channel.arn },
      h('td', { 'data-label': 'Name' }, h('a', { href }, channel.name || `(unnamed) ${shortArn(channel.arn)}`)),
      h('td', { 'data-label': 'Type' }, channel.type),
      h('td', { 'data-label': 'Latency' }, channel.latencyMode),
      h('td', { 'data-label': 'Access' }, channel.authorized ? 'Private' : 'Public'),
      h('td', { 'data-label': 'State', class: 'state' }, liveBadge(live.get(channel.arn))),
      h('td', { 'data-label': 'Viewers', class: 'viewers' }, String(live.get(channel.arn)?.ConcurrentViews ?? '—')));
  });
  const table = channels.length
    ? h('table', { class: 'cards' },
      h('caption', { class: 'hint' }, `${channels.length} channel${channels.length === 1 ? '' : 's'} in ${credentials.region}`),
      h('thead', {}, h('tr', {}, ['Name', 'Type', 'Latency', 'Access', 'State', 'Viewers'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows))
    : h('p', {}, `No channels in ${credentials.region} yet: create one below.`);
  const create = channelForm({}, recordingConfigurations, async (values) => {
    const request = { ...values };
    if (!request.recordingConfigurationArn) delete request.recordingConfigurationArn;
    const created = await api('CreateChannel', request);
    say(`Channel ${created.channel.name || shortArn(created.channel.arn)} created.`);
    location.hash = `#/channel/${encodeURIComponent(created.channel.arn)}`;
  }, 'Create channel');
  main.replaceChildren(
    h('h1', {}, 'Channels'),
    h('section', { class: 'card', 'aria-labelledby': 'list-title' }, h('h2', { id: 'list-title' }, 'Your channels'), table),
    h('section', { class: 'card', 'aria-labelledby': 'create-title' }, h('h2', { id: 'create-title' }, 'Create a channel'), create));
  const timer = setInterval(async () => {
    try {
      const now = await liveChannels();
      for (const row of main.querySelectorAll('tr[data-arn]')) {
        const state = now.get(row.dataset.arn);
        row.querySelector('.state').replaceChildren(liveBadge(state));
        row.querySelector('.viewers').textContent = String(state?.ConcurrentViews ?? '—');
      }
    } catch { /* shown on the next navigation */ }
  }, 3000);
  viewCleanup.push(() => clearInterval(timer));
}

// ---------------------------------------------------------------------------------------------
// One channel.

function withPort(endpoint, port) {
  return /:\d+$/.test(endpoint) ? endpoint : `${endpoint}:${port}`;
}

/** A line graph of the last figures: an SVG with a text alternative and the value beside it. */
function graph(id, title, unit, points, pick, scale = 1) {
  const values = points.map(pick).map((v) => v / scale);
  const last = values.length ? values[values.length - 1] : null;
  const max = Math.max(1, ...values) * 1.15;
  const width = 300;
  const height = 80;
  const start = points.length ? points[0].at : 0;
  const span = Math.max(60000, (points.length ? points[points.length - 1].at : 0) - start);
  const coords = points.map((p, i) => `${((p.at - start) / span * width).toFixed(1)},${(height - values[i] / max * height).toFixed(1)}`).join(' ');
  const text = last === null ? 'no data yet' : `${last.toLocaleString(undefined, { maximumFractionDigits: 1 })} ${unit}`.trim();
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `${title} over the last ${Math.round(span / 1000)} seconds; now ${text}`);
  const axis = document.createElementNS(svg.namespaceURI, 'line');
  for (const [k, v] of [['x1', 0], ['y1', height - 0.5], ['x2', width], ['y2', height - 0.5]]) axis.setAttribute(k, v);
  const line = document.createElementNS(svg.namespaceURI, 'polyline');
  line.setAttribute('points', coords);
  svg.append(axis, line);
  return h('figure', { id, 'data-points': String(points.length), 'data-last': last === null ? '' : String(last) },
    svg, h('figcaption', {}, `${title}: `, h('strong', {}, text)));
}

async function streamKeyOf(channelArn) {
  const keys = await listAll('ListStreamKeys', { channelArn }, 'streamKeys');
  if (!keys.length) return null;
  return (await api('GetStreamKey', { arn: keys[0].arn })).streamKey;
}

function broadcastSection(channel, streamKey) {
  const server = `rtmps://${withPort(channel.ingestEndpoint, 443)}/app/`;
  const children = [h('h2', { id: 'broadcast-title' }, 'Broadcast to this channel')];
  if (!streamKey) {
    const button = h('button', { type: 'button' }, 'Create a stream key');
    button.addEventListener('click', async () => {
      try { await api('CreateStreamKey', { channelArn: channel.arn }); render(); } catch (failure) { say(failure.message, 'error'); }
    });
    children.push(h('p', {}, 'This channel has no stream key.'), button);
    return h('section', { class: 'card', 'aria-labelledby': 'broadcast-title' }, children);
  }
  const key = streamKey.value;
  const ffmpeg = `ffmpeg -re -stream_loop -1 -i video.mp4 -c:v libx264 -preset veryfast -b:v 3000k -g 60 -c:a aac -b:a 160k -f flv "${server}${key}"`;
  children.push(
    h('p', { class: 'hint' }, 'In OBS: Settings → Stream → Service “Custom…”, then the server and stream key below.'),
    copyRow('Server (RTMPS)', server, { name: 'server' }),
    copyRow('Stream key', key, { secret: true, name: 'streamKey' }),
    channel.insecureIngest && copyRow('Server (plain RTMP)', `rtmp://${withPort(channel.ingestEndpoint.replace(/:\d+$/, ''), config.rtmpPort)}/app/`),
    channel.srt?.endpoint && copyRow('SRT URL', `srt://${withPort(channel.srt.endpoint, 9000)}?streamid=${key}&passphrase=${channel.srt.passphrase}`, { secret: true }),
    h('p', { class: 'hint' }, 'Or with ffmpeg (the stream key is part of the command):'),
    h('div', { class: 'copyrow' },
      h('code', { class: 'block', id: 'ffmpeg-command', 'data-command': ffmpeg }, ffmpeg.replace(key, '••••••••')),
      h('button', { type: 'button', class: 'secondary', onclick: () => copy(ffmpeg, 'ffmpeg command') }, 'Copy')));
  return h('section', { class: 'card', 'aria-labelledby': 'broadcast-title' }, children);
}

// Playback tokens: ES384 JWTs signed in the browser (Web Crypto) with a playback key pair's
// private key, which the user pastes in or generates here (its public half is imported).
const PRIVATE_KEYS = 'openivs.playbackPrivateKey';

function pemBody(pem) {
  const base64 = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

function derLength(length) {
  if (length < 0x80) return [length];
  if (length < 0x100) return [0x81, length];
  return [0x82, length >> 8, length & 0xff];
}

/** A SEC1 `EC PRIVATE KEY` (what `openssl ecparam -genkey` writes) wrapped as PKCS#8. */
function sec1ToPkcs8(sec1) {
  const algorithm = [0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
  const body = [0x02, 0x01, 0x00, ...algorithm, 0x04, ...derLength(sec1.length), ...sec1];
  return new Uint8Array([0x30, ...derLength(body.length), ...body]);
}

const base64url = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const toPem = (label, bytes) => `-----BEGIN ${label}-----\n${btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/.{64}/g, '$&\n')}\n-----END ${label}-----\n`;

async function mintToken(pem, claims) {
  const der = pemBody(pem);
  const pkcs8 = /BEGIN EC PRIVATE KEY/.test(pem) ? sec1ToPkcs8(der) : der;
  const key = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'ECDSA', namedCurve: 'P-384' }, false, ['sign']);
  const encode = (value) => base64url(new TextEncoder().encode(JSON.stringify(value)));
  const unsigned = `${encode({ alg: 'ES384', typ: 'JWT' })}.${encode(claims)}`;
  const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-384' }, key, new TextEncoder().encode(unsigned));
  return `${unsigned}.${base64url(new Uint8Array(signature))}`;
}

function tokenSection(channel, keyPairs, onToken) {
  const children = [h('h2', { id: 'token-title' }, 'Playback token')];
  if (!window.crypto?.subtle) {
    children.push(h('p', {}, 'Minting tokens needs Web Crypto, which browsers offer only over HTTPS or on localhost. Open the console at an https:// or localhost address, or mint tokens in your application.'));
    return h('section', { class: 'card', 'aria-labelledby': 'token-title' }, children);
  }
  const privateKey = h('textarea', { name: 'privateKey', spellcheck: 'false' }, sessionStorage.getItem(PRIVATE_KEYS) || '');
  const origin = h('input', { type: 'text', name: 'allowedOrigin', value: '*' });
  const viewerId = h('input', { type: 'text', name: 'viewerId', maxlength: '40' });
  const expires = h('input', { type: 'number', name: 'expiresIn', min: '1', value: '3600' });
  const output = h('div', { id: 'token-output' });
  const generate = h('button', { type: 'button', class: 'secondary' }, 'Generate a key pair here');
  generate.addEventListener('click', async () => {
    try {
      const pair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify']);
      const publicPem = toPem('PUBLIC KEY', await crypto.subtle.exportKey('spki', pair.publicKey));
      const privatePem = toPem('PRIVATE KEY', await crypto.subtle.exportKey('pkcs8', pair.privateKey));
      const imported = await api('ImportPlaybackKeyPair', { publicKeyMaterial: publicPem, name: `console-${Date.now()}` });
      privateKey.value = privatePem;
      sessionStorage.setItem(PRIVATE_KEYS, privatePem);
      say(`Key pair ${imported.keyPair.name} imported; its private key is filled in (this tab only: save it if you need it later).`);
    } catch (failure) {
      say(`Could not create a key pair: ${failure.message}`, 'error');
    }
  });
  const mint = h('button', { type: 'button' }, 'Mint token');
  mint.addEventListener('click', async () => {
    try {
      const claims = { 'aws:channel-arn': channel.arn, 'aws:access-control-allow-origin': origin.value.trim() || '*', exp: Math.floor(Date.now() / 1000) + Number(expires.value || 3600) };
      if (viewerId.value.trim()) claims['aws:viewer-id'] = viewerId.value.trim();
      const token = await mintToken(privateKey.value, claims);
      sessionStorage.setItem(PRIVATE_KEYS, privateKey.value);
      const url = `${channel.playbackUrl}?token=${token}`;
      output.replaceChildren(copyRow('Token', token, { name: 'token' }), copyRow('Playback URL with the token', url, { name: 'tokenUrl' }));
      onToken(token);
    } catch (failure) {
      output.replaceChildren(h('p', { class: 'error-text', role: 'alert' }, `Could not mint a token: ${failure.message}`));
    }
  });
  children.push(
    h('p', { class: 'hint' }, `Viewers of a private channel need a token signed with the private key of one of this region's playback key pairs (${keyPairs.length} imported).`),
    field('Private key (PEM, P-384)', privateKey, 'Kept in this tab only. PKCS#8 or “EC PRIVATE KEY”.'),
    h('div', { class: 'actions' }, generate),
    field('Allowed origin (aws:access-control-allow-origin)', origin),
    field('Viewer ID (optional; tokens with one last at most 10 minutes)', viewerId),
    field('Expires in (seconds)', expires),
    h('div', { class: 'actions' }, mint),
    output);
  return h('section', { class: 'card', 'aria-labelledby': 'token-title' }, children);
}

async function sessionsSection(channel) {
  const sessions = (await api('ListStreamSessions', { channelArn: channel.arn, maxResults: 20 })).streamSessions || [];
  const details = h('div', { id: 'session-details' });
  const show = async (streamId) => {
    try {
      const { streamSession: session } = await api('GetStreamSession', { channelArn: channel.arn, streamId });
      const video = session.ingestConfiguration?.video || {};
      const events = (session.truncatedEvents || []).slice().sort((a, b) => a.eventTime.localeCompare(b.eventTime));
      details.replaceChildren(
        h('h3', {}, `Session ${streamId}`),
        h('dl', { class: 'facts' },
          h('dt', {}, 'Started'), h('dd', {}, fmtTime(session.startTime)),
          h('dt', {}, 'Ended'), h('dd', {}, session.endTime ? fmtTime(session.endTime) : 'still live'),
          h('dt', {}, 'Video'), h('dd', {}, video.codec ? `${video.codec} ${video.videoWidth}×${video.videoHeight} at ${video.targetFramerate} fps, ${Math.round((video.avgBitrate || video.targetBitrate || 0) / 1000)} kbps` : '—'),
          h('dt', {}, 'Recording'), h('dd', {}, session.recordingConfiguration ? recordingText(session.recordingConfiguration) : 'not recorded')),
        h('h4', {}, 'Events'),
        h('ol', { class: 'events' }, events.map((e) => h('li', {}, `${fmtTime(e.eventTime)} — ${e.name}${e.code ? ` (${e.code})` : ''}`))));
      details.querySelector('h3').focus?.();
    } catch (failure) {
      details.replaceChildren(h('p', { class: 'error-text', role: 'alert' }, failure.message));
    }
  };
  const rows = sessions.map((s) => h('tr', {},
    h('td', { 'data-label': 'Started' }, fmtTime(s.startTime)),
    h('td', { 'data-label': 'Ended' }, s.endTime ? fmtTime(s.endTime) : 'live'),
    h('td', { 'data-label': 'Errors' }, s.hasErrorEvent ? 'yes' : 'no'),
    h('td', { 'data-label': '' }, h('button', { type: 'button', class: 'secondary', onclick: () => show(s.streamId), 'aria-label': `Events of the session started ${fmtTime(s.startTime)}` }, 'Events'))));
  // (Marked while a session is listed as live, so the channel's page refreshes it when it ends.)
  return h('section', { class: 'card', 'aria-labelledby': 'sessions-title', id: 'sessions', 'data-open': sessions.some((s) => !s.endTime) },
    h('h2', { id: 'sessions-title' }, 'Stream sessions'),
    sessions.length
      ? h('table', { class: 'cards' }, h('thead', {}, h('tr', {}, ['Started', 'Ended', 'Errors', ''].map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows))
      : h('p', {}, 'No broadcasts yet.'),
    details);
}

// Recordings, read through /_openivs/recordings (signed): thumbnails fetched into blob URLs,
// playback with hls.js signing each request it makes (xhrSetup).
const RECORDINGS = '/_openivs/recordings';

function signRecordingRequest(xhr, url) {
  const target = new URL(url, location.href);
  xhr.open('GET', target.href, true);
  if (target.origin !== location.origin || !target.pathname.startsWith(`${RECORDINGS}/`)) return;
  const headers = signedHeaders({ method: 'GET', host: location.host, path: target.pathname, query: [...target.searchParams], credentials });
  for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
}

async function recordingObject(bucket, key) {
  const path = `${RECORDINGS}/${bucket}/${key}`;
  const headers = signedHeaders({ method: 'GET', host: location.host, path, credentials });
  const response = await fetch(path, { headers, cache: 'no-store' });
  if (!response.ok) throw new Error(`${key}: HTTP ${response.status}`);
  return response.blob();
}

async function recordingsSection(channel) {
  const { recordings } = await send('GET', RECORDINGS, { query: [['channelArn', channel.arn]] });
  const video = h('video', { id: 'recording-player', controls: true, playsinline: true, hidden: true, 'aria-label': 'Recording' });
  let player = null;
  viewCleanup.push(() => player?.destroy());
  const items = recordings.map((recording, index) => {
    const info = recording.ended || recording.started || {};
    const media = info.media || {};
    const startedAt = info.recording_started_at;
    const duration = media.hls?.duration_ms;
    const state = recording.ended ? (info.recording_status === 'RECORDING_ENDED' ? 'complete' : 'ended with a failure') : 'recording';
    const label = `Recording started ${fmtTime(startedAt)}`;
    const thumbnailKey = media.latest_thumbnail?.path || (media.thumbnails ? `${media.thumbnails.path}/thumb0.jpg` : null);
    const thumbnail = h('img', { alt: `First picture of the recording started ${fmtTime(startedAt)}`, width: '160', height: '90', hidden: true });
    if (thumbnailKey) {
      recordingObject(recording.bucket, `${recording.prefix}/${thumbnailKey}`)
        .then((blob) => { thumbnail.src = URL.createObjectURL(blob); thumbnail.hidden = false; })
        .catch(() => {});
    }
    const playlist = `${RECORDINGS}/${recording.bucket}/${recording.prefix}/${media.hls?.path || 'media/hls'}/${media.hls?.playlist || 'master.m3u8'}`;
    const play = h('button', { type: 'button', class: 'secondary', 'aria-label': `Play the ${label.toLowerCase()}`, 'data-recording': String(index) }, 'Play');
    play.addEventListener('click', () => {
      player?.destroy();
      video.hidden = false;
      if (!window.Hls?.isSupported()) { say('This browser cannot play HLS with hls.js.', 'error'); return; }
      player = new window.Hls({ xhrSetup: signRecordingRequest });
      player.loadSource(playlist);
      player.attachMedia(video);
      video.play().catch(() => {});
    });
    return h('li', { class: 'recording' },
      thumbnail,
      h('div', {},
        h('p', {}, h('strong', {}, fmtTime(startedAt)), ` · ${state}${duration ? ` · ${(duration / 1000).toFixed(1)} s` : ''}`),
        h('p', { class: 'hint' }, h('code', {}, `s3://${recording.bucket}/${recording.prefix}/`)),
        play));
  });
  return h('section', { class: 'card', 'aria-labelledby': 'recordings-title', id: 'recordings' },
    h('h2', { id: 'recordings-title' }, 'Recordings'),
    items.length ? h('ul', { class: 'recordings' }, items) : h('p', {}, 'No recordings of this channel in the buckets of your recording configurations.'),
    video);
}

function recordingText(configuration) {
  const s3 = configuration.destinationConfiguration?.s3;
  return `${configuration.name || shortArn(configuration.arn)} → bucket ${s3?.bucketName ?? '?'} (state ${configuration.state})`;
}

async function channelView(arn) {
  main.replaceChildren(h('p', {}, 'Loading…'));
  let channel;
  try {
    channel = (await api('GetChannel', { arn })).channel;
  } catch (failure) {
    main.replaceChildren(h('p', {}, h('a', { href: '#/channels' }, '← Channels')), h('p', { class: 'error-text', role: 'alert' }, failure.message));
    return;
  }
  const [streamKey, recordingConfigurations, keyPairs] = await Promise.all([
    streamKeyOf(arn),
    listAll('ListRecordingConfigurations', {}, 'recordingConfigurations'),
    channel.authorized ? listAll('ListPlaybackKeyPairs', {}, 'keyPairs') : Promise.resolve([]),
  ]);
  const title = channel.name || `(unnamed) ${shortArn(arn)}`;
  let token = null;

  // Preview and live figures.
  const video = h('video', { id: 'preview', muted: true, autoplay: true, playsinline: true, controls: true, 'aria-label': `Preview of ${title}` });
  video.muted = true;
  const previewNote = h('p', { class: 'hint', id: 'preview-note', 'aria-live': 'polite' });
  const latencyText = h('p', { id: 'latency' }, 'Latency: —');
  const liveState = h('p', { id: 'live-state' });
  const stop = h('button', { type: 'button', class: 'secondary', id: 'stop-stream', hidden: true }, 'Stop stream');
  stop.addEventListener('click', async () => {
    try { await api('StopStream', { channelArn: arn }); say('Stream stopped.'); } catch (failure) { say(failure.message, 'error'); }
  });
  const figures = h('div', { class: 'figures', id: 'figures' });
  let player = null;
  let playing = null; // the URL the player plays
  const stopPlayer = () => {
    player?.destroy();
    player = null;
    playing = null;
    video.removeAttribute('src');
  };
  viewCleanup.push(stopPlayer);
  const play = () => {
    const url = channel.authorized ? (token ? `${channel.playbackUrl}?token=${token}` : null) : channel.playbackUrl;
    if (!url) { previewNote.textContent = 'This channel is private: mint a playback token below to preview it.'; return; }
    if (playing === url) return;
    stopPlayer();
    playing = url;
    previewNote.textContent = 'Playing the channel’s playback URL.';
    if (window.Hls?.isSupported()) {
      player = new window.Hls({ lowLatencyMode: channel.latencyMode === 'LOW' });
      player.on(window.Hls.Events.ERROR, (_event, data) => {
        if (data.fatal) { previewNote.textContent = `The player stopped: ${data.details}. It retries while the channel is live.`; stopPlayer(); }
      });
      player.loadSource(url);
      player.attachMedia(video);
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      video.src = url;
    } else {
      previewNote.textContent = 'This browser cannot play HLS.';
    }
    video.play().catch(() => {});
  };
  let wasLive = null;
  let sessionsRefreshed = 0;
  const refreshSessions = async () => {
    sessionsRefreshed = Date.now();
    const fresh = await sessionsSection(channel);
    main.querySelector('#sessions')?.replaceWith(fresh);
    // A recording starts and ends with its session.
    if (recordingConfigurations.length && !main.querySelector('#recording-player:not([hidden])')) {
      main.querySelector('#recordings')?.replaceWith(await recordingsSection(channel));
    }
  };
  const updateLive = (live) => {
    // The sessions change when a stream starts or ends (an ended one is written just after).
    const open = main.querySelector('#sessions')?.dataset.open !== undefined;
    if ((wasLive !== null && wasLive !== !!live) || (!live && open && Date.now() - sessionsRefreshed > 2000)) {
      refreshSessions().catch(() => {});
    }
    wasLive = !!live;
    liveState.replaceChildren(liveBadge(live), live ? ` ${live.ConcurrentViews} viewer${live.ConcurrentViews === 1 ? '' : 's'} · keyframes every ${live.KeyframeInterval.toFixed(1)} s` : ' Not broadcasting.');
    stop.hidden = !live;
    const points = history.get(arn) || [];
    figures.replaceChildren(
      graph('graph-bitrate', 'Ingest video bitrate', 'kbps', points, (p) => p.video, 1000),
      graph('graph-framerate', 'Ingest frame rate', 'fps', points, (p) => p.fps),
      graph('graph-viewers', 'Concurrent views', '', points, (p) => p.viewers));
    if (live) play();
    else if (player || playing) { stopPlayer(); previewNote.textContent = 'The stream ended.'; }
    else if (!live) previewNote.textContent = 'Not live. Start a broadcast with the server and stream key below; the preview starts by itself.';
  };
  const tick = async () => {
    try {
      updateLive((await liveChannels()).get(arn));
    } catch { /* the next tick tries again */ }
    // The player's position against the time the server stamped on it (EXT-X-PROGRAM-DATE-TIME).
    const at = player?.playingDate;
    if (at && !video.paused) latencyText.textContent = `Latency: ${((Date.now() - at.getTime()) / 1000).toFixed(1)} s behind ingest`;
    else latencyText.textContent = 'Latency: —';
  };
  const timer = setInterval(tick, 1000);
  viewCleanup.push(() => clearInterval(timer));

  // Settings and deletion.
  const settings = channelForm(channel, recordingConfigurations, async (values) => {
    const updated = await api('UpdateChannel', { arn, ...values });
    channel = updated.channel;
    say('Channel saved.');
    render();
  }, 'Save changes');
  const remove = h('button', { type: 'button', class: 'danger' }, 'Delete channel');
  const confirmBox = h('div', { class: 'actions', hidden: true },
    h('span', {}, `Delete ${title} and its stream keys? This cannot be undone.`),
    h('button', { type: 'button', class: 'danger', id: 'confirm-delete', onclick: async () => {
      try {
        await api('DeleteChannel', { arn });
        say(`Channel ${title} deleted.`);
        location.hash = '#/channels';
      } catch (failure) { say(failure.message, 'error'); }
    } }, 'Yes, delete'),
    h('button', { type: 'button', class: 'secondary', onclick: () => { confirmBox.hidden = true; remove.focus(); } }, 'Cancel'));
  remove.addEventListener('click', () => { confirmBox.hidden = false; confirmBox.querySelector('#confirm-delete').focus(); });

  const recording = channel.recordingConfigurationArn
    ? recordingConfigurations.find((r) => r.arn === channel.recordingConfigurationArn)
    : null;
  main.replaceChildren(
    h('p', {}, h('a', { href: '#/channels' }, '← Channels')),
    h('h1', {}, title),
    h('p', { class: 'hint' }, h('code', {}, arn)),
    h('div', { class: 'grid' },
      h('div', {},
        h('section', { class: 'card', 'aria-labelledby': 'preview-title' },
          h('h2', { id: 'preview-title' }, 'Live preview'), liveState, video, latencyText, previewNote, h('div', { class: 'actions' }, stop)),
        h('section', { class: 'card', 'aria-labelledby': 'figures-title' },
          h('h2', { id: 'figures-title' }, 'Live figures'), figures,
          h('p', { class: 'hint' }, 'Measured by the server each second while the console is open, as IVS reports them to CloudWatch.')),
        await sessionsSection(channel),
        recordingConfigurations.length ? await recordingsSection(channel) : null),
      h('div', {},
        broadcastSection(channel, streamKey),
        h('section', { class: 'card', 'aria-labelledby': 'playback-title' },
          h('h2', { id: 'playback-title' }, 'Playback'),
          copyRow('Playback URL', channel.playbackUrl, { name: 'playbackUrl' }),
          h('p', { class: 'hint' }, channel.authorized ? 'Private: viewers add ?token=… (below).' : 'Public: any HLS player can play it.'),
          h('p', { class: 'hint' }, channel.recordingConfigurationArn ? `Recorded: ${recording ? recordingText(recording) : channel.recordingConfigurationArn}` : 'Not recorded.')),
        channel.authorized && tokenSection(channel, keyPairs, (minted) => { token = minted; playing = null; tick(); }),
        h('section', { class: 'card', 'aria-labelledby': 'settings-title' }, h('h2', { id: 'settings-title' }, 'Settings'), settings),
        h('section', { class: 'card', 'aria-labelledby': 'delete-title' }, h('h2', { id: 'delete-title' }, 'Delete'), h('div', { class: 'actions' }, remove), confirmBox))));
  await tick();
}

// ---------------------------------------------------------------------------------------------
// Routing.

async function render() {
  for (const cleanup of viewCleanup.splice(0)) cleanup();
  signOutButton.hidden = !credentials;
  who.textContent = credentials ? `${credentials.accessKeyId} · ${credentials.region}` : '';
  if (!credentials) return signInView();
  const route = location.hash.match(/^#\/channel\/(.+)$/);
  try {
    if (route) await channelView(decodeURIComponent(route[1]));
    else await channelsView();
  } catch (failure) {
    if (credentials) main.replaceChildren(h('p', { class: 'error-text', role: 'alert' }, failure.message));
  }
  document.title = `${main.querySelector('h1')?.textContent || 'Console'} · openivs`;
}

window.addEventListener('hashchange', () => {
  // A message outlives the view it was said on only when it announced the move ("created").
  if (Date.now() - saidAt > 2000) say('');
  render();
  main.focus();
});

try {
  config = { ...config, ...(await (await fetch('config.json', { cache: 'no-store' })).json()) };
} catch { /* the defaults above */ }
render();
