#!/usr/bin/env python3
"""An independent HTTP/3 client for StreamGate's tests, built on aioquic (PyPI).

Reads a JSON job from stdin:
  {"host": "127.0.0.1", "port": 8443, "server_name": "localhost", "connections": 1,
   "requests": [{"method": "GET", "path": "/v/..", "headers": [["range", "bytes=0-9"]]}, ...]}
Sends every request concurrently, spread over `connections` QUIC connections, and prints
one JSON object: {"alpn": [...], "responses": [{"status", "headers", "body_b64"} or
{"error"}, ...]} in request order. Certificates are not verified (tests use a self-signed
one). With "stall_streams": N, each connection first opens N request streams that send one
byte of a HEADERS frame and then nothing, as a misbehaving client would.
"""
import asyncio
import base64
import json
import ssl
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self._pending = {}

    def quic_event_received(self, event):
        if isinstance(event, StreamReset) and event.stream_id in self._pending:
            st = self._pending.pop(event.stream_id)
            st["fut"].set_exception(RuntimeError(f"stream reset, code {event.error_code}"))
        if isinstance(event, ConnectionTerminated):
            for st in self._pending.values():
                if not st["fut"].done():
                    st["fut"].set_exception(RuntimeError(f"connection closed: {event.reason_phrase}"))
            self._pending.clear()
        for ev in self._http.handle_event(event):
            st = self._pending.get(getattr(ev, "stream_id", None))
            if st is None:
                continue
            if isinstance(ev, HeadersReceived):
                st["headers"].extend(ev.headers)
            elif isinstance(ev, DataReceived):
                st["body"].extend(ev.data)
            if getattr(ev, "stream_ended", False):
                del self._pending[ev.stream_id]
                st["fut"].set_result(st)

    def stall(self, n):
        for _ in range(n):
            sid = self._quic.get_next_available_stream_id()
            self._quic.send_stream_data(sid, b"\x01", end_stream=False)
        self.transmit()

    async def request(self, authority, req):
        sid = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", req.get("method", "GET").encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", req["path"].encode()),
        ] + [(k.encode(), v.encode()) for k, v in req.get("headers", [])]
        fut = asyncio.get_running_loop().create_future()
        self._pending[sid] = {"fut": fut, "headers": [], "body": bytearray()}
        self._http.send_headers(sid, headers, end_stream=True)
        self.transmit()
        st = await fut
        hdrs = {}
        status = None
        for k, v in st["headers"]:
            k, v = k.decode(), v.decode()
            if k == ":status":
                status = int(v)
            else:
                hdrs[k] = v
        return {"status": status, "headers": hdrs, "body_b64": base64.b64encode(bytes(st["body"])).decode()}


async def main():
    job = json.load(sys.stdin)
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE,
                            server_name=job.get("server_name", "localhost"),
                            max_stream_data=16 << 20, max_data=64 << 20)
    n = max(1, job.get("connections", 1))
    authority = f"{job.get('server_name', 'localhost')}:{job['port']}"
    reqs = job["requests"]
    results = [None] * len(reqs)
    alpn = []
    peer = []

    async def run(conn_index):
        async with connect(job["host"], job["port"], configuration=cfg, create_protocol=Client) as c:
            alpn.append(c._quic.tls.alpn_negotiated)
            cert = getattr(c._quic.tls, "_peer_certificate", None)
            if cert is not None:
                from cryptography.hazmat.primitives import hashes
                peer.append(cert.fingerprint(hashes.SHA256()).hex())
            c.stall(job.get("stall_streams", 0))
            idx = list(range(conn_index, len(reqs), n))

            async def one(i):
                try:
                    return await asyncio.wait_for(c.request(authority, reqs[i]), timeout=job.get("timeout", 60))
                except Exception as e:  # reported per request; the test decides
                    return {"error": repr(e)}

            out = await asyncio.gather(*(one(i) for i in idx))
            for i, r in zip(idx, out):
                results[i] = r

    await asyncio.wait_for(asyncio.gather(*(run(i) for i in range(n))), timeout=job.get("timeout", 60))
    json.dump({"alpn": alpn, "peer_cert_sha256": peer, "responses": results}, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
