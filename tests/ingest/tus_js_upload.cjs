// Uploads a file to a tus server with tus-js-client (Node), as a user's script would.
// Argument: one JSON object {endpoint, token, file, metadata, chunkSize, abortAt, slowMs,
// uploadUrl}. abortAt: abort the upload once this many bytes were sent (an interruption
// mid-request); slowMs: feed the body from a stream, 1 MiB every slowMs (so a test can act
// mid-request); uploadUrl: resume that upload. Prints JSON lines: created, aborted, success
// or error (with the status code), each with the upload URL; success has the time taken
// from start to the last response (ms).
const path = require('node:path');
const fs = require('node:fs');
const { Readable } = require('node:stream');
const dir = process.env.STREAMGATE_INGEST_NODE_DIR || path.join(process.env.HOME, '.cache/streamgate-ingest-node');
const tus = require(path.join(dir, 'node_modules/tus-js-client'));

const a = JSON.parse(process.argv[2]);
const size = fs.statSync(a.file).size;
let source = fs.createReadStream(a.file);
if (a.slowMs) {
  const fd = fs.openSync(a.file, 'r');
  let pos = 0;
  source = new Readable({
    read() {
      setTimeout(() => {
        const n = Math.min(1 << 20, size - pos);
        if (n <= 0) { this.push(null); return; }
        const buf = Buffer.alloc(n);
        fs.readSync(fd, buf, 0, n, pos);
        pos += n;
        this.push(buf);
      }, a.slowMs);
    },
  });
}
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const upload = new tus.Upload(source, {
  endpoint: a.endpoint,
  uploadUrl: a.uploadUrl || null,
  uploadSize: size,
  chunkSize: a.chunkSize || size,
  headers: { Authorization: `Bearer ${a.token}` },
  metadata: a.metadata || {},
  retryDelays: [0, 200, 500],
  storeFingerprintForResuming: false,
  onUploadUrlAvailable() { say({ event: 'created', url: upload.url }); },
  onProgress(sent) {
    if (a.abortAt && sent >= a.abortAt && !upload._aborted) {
      upload._aborted = true;
      upload.abort(false).then(() => { say({ event: 'aborted', url: upload.url, sent }); process.exit(0); });
    }
  },
  onError(err) {
    say({ event: 'error', url: upload.url, status: err.originalResponse ? err.originalResponse.getStatus() : null, message: String(err) });
    process.exit(1);
  },
  onSuccess() {
    say({ event: 'success', url: upload.url, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    process.exit(0);
  },
});
const t0 = process.hrtime.bigint();
upload.start();
