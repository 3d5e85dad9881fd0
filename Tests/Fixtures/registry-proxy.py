#!/usr/bin/env python3
"""An HTTP proxy in front of a real registry that misbehaves on demand, for
pull tests: it forwards GET and HEAD requests to the registry and, as the
mode file says at each request,

  pass                 forwards everything as it is
  cut-blob BYTES       sends only the first BYTES bytes of a blob's body, then closes
  status CODE          answers every /v2/ request other than /v2/ itself with CODE
  garbage-manifest     answers manifest requests with a body that is not JSON

Every request is logged as "METHOD PATH RANGE" to the log file.
Usage: registry-proxy.py UPSTREAM_PORT MODE_FILE LOG_FILE PORT_FILE
Listens on 127.0.0.1 on a free port, written to PORT_FILE once listening.
"""
import http.client
import http.server
import os
import sys
import threading

upstream_port = int(sys.argv[1])
mode_file, log_file, port_file = sys.argv[2], sys.argv[3], sys.argv[4]
log_lock = threading.Lock()


def mode():
    try:
        with open(mode_file) as f:
            return f.read().split()
    except FileNotFoundError:
        return ["pass"]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.forward(head=True)

    def do_GET(self):
        self.forward(head=False)

    def answer(self, head, status, content_type, body):
        """Answers for the registry, then closes the connection."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self.close_connection = True

    def forward(self, head):
        m = mode()
        with log_lock, open(log_file, "a") as f:
            f.write(f"{self.command} {self.path} {self.headers.get('Range', '-')}\n")
        is_blob = "/blobs/sha256:" in self.path
        is_manifest = "/manifests/" in self.path
        if m[0] == "status" and self.path != "/v2/":
            return self.answer(head, int(m[1]), "application/json", b'{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}')
        if m[0] == "garbage-manifest" and is_manifest:
            return self.answer(head, 200, "application/vnd.oci.image.manifest.v1+json", b"this is not a manifest {")
        conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        headers["Host"] = f"127.0.0.1:{upstream_port}"
        conn.request(self.command, self.path, headers=headers)
        response = conn.getresponse()
        self.send_response(response.status)
        for k, v in response.getheaders():
            if k.lower() in ("connection", "transfer-encoding", "keep-alive"):
                continue
            if k.lower() == "location" and v.startswith(f"http://127.0.0.1:{upstream_port}"):
                v = v.replace(f"127.0.0.1:{upstream_port}", f"127.0.0.1:{self.server.server_port}", 1)
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if head:
            return
        limit = int(m[1]) if m[0] == "cut-blob" and is_blob and response.status in (200, 206) else None
        sent = 0
        while True:
            chunk = response.read(16384)
            if not chunk:
                break
            if limit is not None and sent + len(chunk) > limit:
                self.wfile.write(chunk[: limit - sent])
                self.wfile.flush()
                return  # closes mid-body
            self.wfile.write(chunk)
            sent += len(chunk)
        conn.close()


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_port))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
