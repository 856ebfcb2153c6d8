// AWS Signature Version 4 in the browser, for the console's calls to the IVS API on this origin.
//
// SHA-256 and HMAC are written out here rather than taken from Web Crypto: `crypto.subtle`
// exists only in secure contexts (HTTPS, or localhost), and a console reached over plain HTTP on
// a LAN address must still be able to sign. The canonical request follows AWS's rules for every
// service but S3: each path segment is URI-encoded once more (so `/tags/arn%3A…` is signed as
// `/tags/arn%253A…`), the query is sorted, and the signed headers are host, x-amz-date and,
// with a body, content-type.

const H0 = new Uint32Array(8);
const K = new Uint32Array(64);
{
  // The fractional parts of the square roots of the first 8 primes and the cube roots of the
  // first 64 (FIPS 180-4 §4.2.2, §5.3.3).
  const primes = [];
  for (let n = 2; primes.length < 64; n++) {
    if (primes.every((p) => n % p !== 0)) primes.push(n);
  }
  const fraction = (x) => ((x - Math.floor(x)) * 0x100000000) >>> 0;
  primes.forEach((p, i) => {
    if (i < 8) H0[i] = fraction(Math.sqrt(p));
    K[i] = fraction(Math.cbrt(p));
  });
}

const rotr = (x, n) => (x >>> n) | (x << (32 - n));

/** SHA-256 of bytes (Uint8Array) → Uint8Array(32). */
export function sha256(bytes) {
  const padded = new Uint8Array((((bytes.length + 9 + 63) >> 6) << 6));
  padded.set(bytes);
  padded[bytes.length] = 0x80;
  const view = new DataView(padded.buffer);
  const bits = bytes.length * 8;
  view.setUint32(padded.length - 8, Math.floor(bits / 0x100000000));
  view.setUint32(padded.length - 4, bits >>> 0);
  const hash = H0.slice();
  const w = new Uint32Array(64);
  for (let block = 0; block < padded.length; block += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(block + 4 * i);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    let [a, b, c, d, e, f, g, h] = hash;
    for (let i = 0; i < 64; i++) {
      const t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    [a, b, c, d, e, f, g, h].forEach((v, i) => { hash[i] = (hash[i] + v) | 0; });
  }
  const out = new Uint8Array(32);
  const outView = new DataView(out.buffer);
  hash.forEach((v, i) => outView.setUint32(4 * i, v));
  return out;
}

const utf8 = (text) => new TextEncoder().encode(text);
const concat = (a, b) => { const out = new Uint8Array(a.length + b.length); out.set(a); out.set(b, a.length); return out; };
export const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/** HMAC-SHA256 (RFC 2104) of message (string or bytes) under key (string or bytes). */
export function hmac(key, message) {
  let keyBytes = typeof key === 'string' ? utf8(key) : key;
  if (keyBytes.length > 64) keyBytes = sha256(keyBytes);
  const inner = new Uint8Array(64).fill(0x36);
  const outer = new Uint8Array(64).fill(0x5c);
  keyBytes.forEach((b, i) => { inner[i] ^= b; outer[i] ^= b; });
  const messageBytes = typeof message === 'string' ? utf8(message) : message;
  return sha256(concat(outer, sha256(concat(inner, messageBytes))));
}

/** RFC 3986 encoding of everything but the unreserved characters, as SigV4 wants it. */
export const uriEncode = (text) =>
  encodeURIComponent(text).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());

/**
 * The headers that sign a request to `host` (as the browser will send it: location.host).
 * path: the request's path as sent (already encoded); query: [[name, value], …] unencoded.
 */
export function signedHeaders({ method, host, path, query = [], body = '', contentType, credentials, service = 'ivs', now = new Date() }) {
  const amzDate = now.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const day = amzDate.slice(0, 8);
  const headers = { host, 'x-amz-date': amzDate };
  if (contentType) headers['content-type'] = contentType;
  const names = Object.keys(headers).sort();
  const canonicalUri = path.split('/').map(uriEncode).join('/');
  const canonicalQuery = query
    .map(([name, value]) => [uriEncode(name), uriEncode(value)])
    .sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0))
    .map(([name, value]) => `${name}=${value}`)
    .join('&');
  const canonicalRequest = [
    method,
    canonicalUri,
    canonicalQuery,
    names.map((name) => `${name}:${String(headers[name]).trim()}\n`).join(''),
    names.join(';'),
    hex(sha256(utf8(body))),
  ].join('\n');
  const scope = `${day}/${credentials.region}/${service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, hex(sha256(utf8(canonicalRequest)))].join('\n');
  let key = hmac(`AWS4${credentials.secretAccessKey}`, day);
  for (const part of [credentials.region, service, 'aws4_request']) key = hmac(key, part);
  const signature = hex(hmac(key, stringToSign));
  const result = {
    'x-amz-date': amzDate,
    authorization: `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`,
  };
  if (contentType) result['content-type'] = contentType;
  return result;
}
