#!/usr/bin/python3
"""A hostile token endpoint for test/t/330_hostile_provider.pl (stdlib only).

    hostile_provider.py --port-file PATH

Listens on 127.0.0.1 (any free port, written to --port-file once listening)
and answers every POST by the last part of its path with one canned hostile
answer: bodies over 1 MiB, invalid UTF-8, NUL bytes, deep nesting, absurd
expires_in values, a redirect, control characters, oversized or non-ASCII
tokens, a HubSpot-style "status" in a success body.  Every request is
appended to <port-file>.log (path only), so a test can tell what arrived.
"""
import argparse, json, os, sys, threading, time
from urllib.parse import parse_qs
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

J, F = "application/json", "application/x-www-form-urlencoded"


def answers(port):
    ok = {"access_token": "at-ok", "token_type": "bearer", "expires_in": 3600}
    return {
        # status, body (bytes), content type, extra headers
        "big": (200, json.dumps(dict(ok, pad="x" * (1536 * 1024))).encode(), J, {}),
        "badutf8": (200, b'{"access_token": "at-bad", "scope": "a\xff\xfeb"}', J, {}),
        "badutf8_error": (400, b'{"error": "invalid_grant", "error_description": "x\xc3\x28"}', J, {}),
        "nul_escape": (200, b'{"access_token": "at\\u0000x"}', J, {}),
        "nul_raw": (200, b'{"access_token": "at-nul", "scope": "a\x00b"}', J, {}),
        "form_nul": (200, b"access_token=at%00x&token_type=bearer", F, {}),
        "form_junk": (200, b"access_token=at-form&scope=%FF%FE&instance_url=%0Ahttp://x", F, {}),
        "deep": (200, b'{"a":' * 100000 + b"1" + b"}" * 100000, J, {}),
        "deep_array": (200, b'{"access_token": "at-deep", "x": ' + b"[" * 500000 + b"]" * 500000 + b"}", J, {}),
        "deep_ok": (200, json.dumps(dict(ok, x=[[[[1]]]])).encode(), J, {}),
        "neg": (200, json.dumps(dict(ok, access_token="at-neg", expires_in=-5)).encode(), J, {}),
        "huge": (200, b'{"access_token": "at-huge", "expires_in": 1e300}', J, {}),
        "nan": (200, json.dumps(dict(ok, access_token="at-nan", expires_in="NaN")).encode(), J, {}),
        "text": (200, json.dumps(dict(ok, access_token="at-text", expires_in="soon")).encode(), J, {}),
        "frac": (200, json.dumps(dict(ok, access_token="at-frac", expires_in=1799.9)).encode(), J, {}),
        "bigint": (200, b'{"access_token": "at-bigint", "expires_in": 99999999999999999999999}', J, {}),
        "redirect": (302, b"", "text/plain",
                     {"Location": "http://127.0.0.1:%d/ok" % port}),
        "ok": (200, json.dumps(ok).encode(), J, {}),
        "ctrl": (400, json.dumps({"error": "invalid_request\nFAKE",
                                  "error_description": "line1\nLOG:  forged line\r\x1b[31m"}).encode(), J, {}),
        "long_token": (200, json.dumps(dict(ok, access_token="a" * 70000)).encode(), J, {}),
        "nonascii_token": (200, json.dumps(dict(ok, access_token="at-\u00e9")).encode(), J, {}),
        "crlf_token": (200, json.dumps(dict(ok, access_token="at\r\nX-Injected: 1")).encode(), J, {}),
        "long_scope": (200, json.dumps(dict(ok, access_token="at-ls", scope="s" * 10000)).encode(), J, {}),
        "status_ok": (200, json.dumps(dict(ok, access_token="at-status", status="SUCCESS")).encode(), J, {}),
        "revoke_status": (200, json.dumps({"status": "SUCCESS"}).encode(), J, {}),
        "not_object": (200, b'["access_token", "at-arr"]', J, {}),
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        name = self.path.rstrip("/").rsplit("/", 1)[-1]
        with self.server.lock:
            with open(self.server.logpath, "a") as f:
                f.write(self.path + "\n")
        if name in ("echo", "echo_ok", "slow"):
            # echo: the request (secrets and all) thrown back in an error and
            # in fields that are kept; slow: a plain answer after 3 s
            form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
            if name == "echo":
                status, body = 400, {"error": "invalid_request",
                                     "error_description": "got " + raw.decode("utf-8", "replace")}
            elif name == "echo_ok":
                status, body = 200, {"access_token": "at-echo", "expires_in": 3600,
                                     "instance_url": "https://x/" + form.get("refresh_token", ""),
                                     "scope": form.get("client_secret", "")}
            else:
                time.sleep(3)
                status, body = 200, {"access_token": "at-slow", "expires_in": 3600}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", J)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if name == "big_stream":    # no Content-Length: read until close, past 1 MiB
            self.send_response(200)
            self.send_header("Content-Type", J)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                self.wfile.write(b'{"access_token": "at-stream", "pad": "')
                for _ in range(24):
                    self.wfile.write(b"x" * 65536)
                self.wfile.write(b'"}')
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        status, body, ctype, headers = answers(self.server.server_address[1]).get(
            name, (404, b'{"error": "not_found"}', J, {}))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    a = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.logpath = a.port_file + ".log"
    open(srv.logpath, "w").close()
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, a.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
