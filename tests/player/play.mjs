// Plays a page in headless Chromium and reports what it did, over the DevTools protocol
// on a pipe (--remote-debugging-pipe: no port, no WebSocket library).
//
//   node tests/player/play.mjs <chromium> <url> <seconds> [screenshot.png]
//
// Every host other than 127.0.0.1 resolves to nothing, so the page can only use loopback.
// Prints one JSON line: {"state": <the page's #state JSON>, "requests": [urls...],
// "failed": [urls...]}.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [chrome, url, seconds, shot] = process.argv.slice(2);
if (!chrome || !url || !seconds) {
  console.error('usage: play.mjs <chromium> <url> <seconds> [screenshot.png]');
  process.exit(64);
}
const profile = mkdtempSync(join(tmpdir(), 'sg-chromium-'));
const child = spawn(chrome, [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--mute-audio',
  '--autoplay-policy=no-user-gesture-required', '--remote-debugging-pipe',
  `--user-data-dir=${profile}`, '--window-size=1000,900',
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
  'about:blank',
], { stdio: ['ignore', 'ignore', 'ignore', 'pipe', 'pipe'] });
const toChrome = child.stdio[3];
const fromChrome = child.stdio[4];
const pending = new Map();
const requests = [];
const failed = [];
let next = 0;
let buffered = '';
fromChrome.on('data', (chunk) => {
  buffered += chunk.toString();
  let end;
  while ((end = buffered.indexOf('\0')) >= 0) {
    const msg = JSON.parse(buffered.slice(0, end));
    buffered = buffered.slice(end + 1);
    if (msg.id !== undefined && pending.has(msg.id)) {
      pending.get(msg.id)(msg);
      pending.delete(msg.id);
    } else if (msg.method === 'Network.requestWillBeSent') {
      requests.push(msg.params.request.url);
    } else if (msg.method === 'Network.loadingFailed' && !msg.params.canceled) {
      failed.push(msg.params.errorText);
    }
  }
});
const send = (method, params = {}, sessionId) => new Promise((resolve, reject) => {
  const id = ++next;
  pending.set(id, (m) => (m.error ? reject(new Error(`${method}: ${m.error.message}`)) : resolve(m.result)));
  toChrome.write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + '\0');
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const watchdog = setTimeout(() => { console.error('chromium did not answer'); child.kill('SIGKILL'); process.exit(70); }, (Number(seconds) + 60) * 1000);

try {
  const { targetId } = await send('Target.createTarget', { url: 'about:blank' });
  const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
  await send('Network.enable', {}, sessionId);
  await send('Page.enable', {}, sessionId);
  await send('Page.navigate', { url }, sessionId);
  const until = Date.now() + Number(seconds) * 1000;
  let state = null;
  while (Date.now() < until) {
    await sleep(500);
    const r = await send('Runtime.evaluate', {
      expression: "(document.getElementById('state') || {}).textContent || ''",
      returnByValue: true,
    }, sessionId);
    if (r.result && r.result.value) state = JSON.parse(r.result.value);
  }
  if (shot) {
    const r = await send('Page.captureScreenshot', { format: 'png' }, sessionId);
    writeFileSync(shot, Buffer.from(r.data, 'base64'));
  }
  console.log(JSON.stringify({ state, requests, failed }));
} finally {
  clearTimeout(watchdog);
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
  try { rmSync(profile, { recursive: true, force: true }); } catch { /* left in the temp dir */ }
}
