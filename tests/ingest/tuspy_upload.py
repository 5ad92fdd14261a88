"""Uploads a file to a tus server with tuspy (PyPI), as a user's script would.

Argument: one JSON object {endpoint, token, file, metadata, chunk_size, stop_at, url,
checksum}. stop_at: stop once this many bytes are uploaded (an interrupted client); url:
resume that upload (tuspy asks the server's offset with HEAD first); checksum: send
Upload-Checksum (sha1) with every chunk. Prints one JSON line: {url, offset} or {error,
status}.
"""
import json
import sys

from tusclient import client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

a = json.loads(sys.argv[1])
c = client.TusClient(a["endpoint"], headers={"Authorization": "Bearer " + a["token"]})
try:
    up = c.uploader(
        a["file"],
        url=a.get("url"),
        chunk_size=a.get("chunk_size", 1 << 20),
        metadata=a.get("metadata", {}),
        upload_checksum=a.get("checksum", False),
    )
    up.upload(stop_at=a.get("stop_at"))
    print(json.dumps({"url": up.url, "offset": up.offset}))
except (TusCommunicationError, TusUploadFailed) as e:
    print(json.dumps({"error": str(e), "status": getattr(e, "status_code", None)}))
    sys.exit(1)
