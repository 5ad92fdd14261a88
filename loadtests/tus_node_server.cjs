// The peer of loadtests/bench_ingest.py: @tus/server with @tus/file-store (the reference
// Node tus server and its file store), as its README sets it up, on 127.0.0.1:<port>.
// Usage: node tus_node_server.cjs <port> <directory>
const path = require('node:path');
const http = require('node:http');
const dir = process.env.STREAMGATE_INGEST_NODE_DIR || path.join(process.env.HOME, '.cache/streamgate-ingest-node');
const { Server } = require(path.join(dir, 'node_modules/@tus/server'));
const { FileStore } = require(path.join(dir, 'node_modules/@tus/file-store'));

const [port, directory] = process.argv.slice(2);
const server = new Server({ path: '/uploads', datastore: new FileStore({ directory }) });
http.createServer((req, res) => server.handle(req, res)).listen(Number(port), '127.0.0.1');
