#!/usr/bin/env python3
"""A registry token service (the bearer-token flow of the distribution spec)
for pull tests: it issues RS256-signed JWTs that docker-registry, configured
with `auth: token` and this key's certificate as its root bundle, accepts.

Repositories under private/ need the user and password given here (HTTP
basic auth on the token request); others are open to anyone for pull, and
to the user for push. Every request is logged as "SCOPE USER" to the log.

Usage: token-server.py KEY.pem CERT.pem ISSUER USER PASSWORD LOG_FILE PORT_FILE
"""
import base64
import http.server
import json
import os
import subprocess
import sys
import time
import urllib.parse

key, cert, issuer, user, password, log_file, port_file = sys.argv[1:8]
with open(cert) as f:
    pem = f.read()
der_b64 = "".join(l for l in pem.splitlines() if l and not l.startswith("-----"))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(claims):
    header = {"typ": "JWT", "alg": "RS256", "x5c": [der_b64]}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input.encode(),
                               capture_output=True, check=True).stdout
    return signing_input + "." + b64url(signature)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        who = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            given = base64.b64decode(auth[6:]).decode(errors="replace")
            if given != f"{user}:{password}":
                return self.answer(401, {"details": "wrong user name or password"})
            who = user
        access = []
        for scope in query.get("scope", []):
            for item in scope.split(" "):
                parts = item.split(":")
                if len(parts) != 3 or parts[0] != "repository":
                    continue
                name, actions = parts[1], parts[2].split(",")
                if name.startswith("private/") and who is None:
                    with open(log_file, "a") as f:
                        f.write(f"{item} anonymous-refused\n")
                    return self.answer(401, {"details": "authentication required"})
                granted = [a for a in actions if a == "pull" or who is not None]
                access.append({"type": "repository", "name": name, "actions": granted})
        with open(log_file, "a") as f:
            f.write(f"{' '.join(query.get('scope', ['-']))} {who or 'anonymous'}\n")
        now = int(time.time())
        token = sign({"iss": issuer, "sub": who or "", "aud": query.get("service", [""])[0], "exp": now + 300,
                      "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access})
        self.answer(200, {"token": token, "access_token": token, "expires_in": 300})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_port))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
