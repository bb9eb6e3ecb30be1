#!/usr/bin/python3
"""Fake OAuth 2.0 provider for the TAP tests and the demo (stdlib only).

    provider.py --port N [--port-file PATH] [--cert PEM --key PEM] [--log PATH]

Listens on 127.0.0.1 only (port 0 = any free port, written atomically to
--port-file once listening); HTTPS with --cert/--key.  One thread per
connection, so a "hang" never blocks other requests.  SIGTERM/SIGINT exit.

Token endpoint: POST /token or any path ending in /token, /oauth.v2.access or
/access_token.  Form body, or JSON when Content-Type is application/json.
Client auth: HTTP Basic, or client_id/client_secret in the body; while no
client is registered every client is accepted.
  refresh_token       "<grant>.<n>" ("g1.0"; no "." = whole token is the
                      grant); unknown grants are created on first use.
  authorization_code  codes from /_control/code: single use, redirect_uri
                      and PKCE (S256) checked when registered.
  client_credentials  "cc-<client_id>-<k>", never a refresh token.
Access tokens are "at-<grant>-<k>", k counting per grant from 1.
Revocation: POST /revoke (or any path ending in /revoke) is recorded.
Resource endpoint (the API of examples/): GET /api/<anything> with
"Authorization: Bearer <access token>" answers 200 {"path", "grant"} for the
newest access token issued to a grant and not revoked, else 401
(WWW-Authenticate: Bearer error="invalid_token").

Running it by hand (docs/install.md or the README: "Trying it with the test provider"):
    python3 test/provider.py --port 8900 &
    # http:// needs oauth.allow_http = on (and 127.0.0.1
    # oauth.allow_private_addresses = on) in postgresql.conf

Behaviour (global default, overridable per grant):
  mode        ok | invalid_grant | invalid_client | error200 | github_error |
              hubspot_bad | atlassian403 | 503 | 429 | hang | garbage |
              no_access_token
  rotate      issue "<grant>.<n+1>" on each successful refresh (false)
  strict      accept only the grant's current refresh token (false)
  expires_in  3600;   expires_in_style: number | string | omit
  refresh_token_expires_in   int or null (field sent when not null)
  response_format  json | form | form_unless_accept (JSON if Accept: json)
  extra       dict merged into successful answers
  latency_ms  sleep before answering;  hang_seconds (30);  retry_after (2)

Lost answers and rotation (issue 8; see shared/PROVIDERS.md):
  grace_seconds   with rotate + strict: the previous refresh token stays
                  accepted for this many seconds after it was rotated
                  (Xero, Okta, Atlassian style); outside the window it gets
                  invalid_grant.  A refresh with it inside the window rotates
                  again.  null (default): no grace.
  answer_delay_ms the answer is decided (and the grant rotated) on arrival,
                  then held this long before it is sent: "answers after the
                  client's timeout, having already rotated".
  mode drop       the request is read and fully processed (rotating when
                  rotate is on), then the connection is closed without an
                  answer (the client sees "empty reply").
  mode resent_drop  a keep-alive connection that dies under a re-sent
                  request: a request on a reused connection is read and the
                  connection closed without a byte (never processed, as by a
                  server that timed the idle connection out), so libcurl
                  sends it again on a fresh connection; there it is processed
                  (rotating) and its answer dropped as in mode drop.  Only
                  the processed request counts against mode_times.
  mode unauthorized_client   400 {"error": "unauthorized_client"}
  mode 401        401 with no error code in the body
  mode_times      the grant's (or tenant's) mode applies to this many token
                  requests, then it answers as mode ok; 0 (default): always.
Tenant paths: a token path /t/<tenant>/...token is tenant <tenant>;
  POST /_control/tenant {"tenant": "t1", behaviour...} sets behaviour for
  that tenant's requests only (over the grant's), e.g. mode
  unauthorized_client for one Microsoft-style tenant.  The stats count
  requests by tenant ("by_tenant").

Echoes (issue 14: redaction):
  mode echo       an error answer that echoes what the request sent:
    echo          template; {name} or {name|form} is replaced by a value of
                  the request: client_secret, client_id, refresh_token,
                  code, code_verifier, token (the raw values, from the body
                  or the Basic header), authorization (the Basic header's
                  value as sent), basic_raw (base64 of the raw
                  client_id:client_secret), headers (every request header,
                  "Name: value" lines), body (the request body as sent).
                  form: raw | url | url_lower | url_plus | url_plus_lower |
                  json | json_slash | json_u | json_u_upper | b64
    echo_pad      that many "." before the echoed text
    echo_in       error_description (JSON, with "error": echo_error) |
                  error (JSON, the text is the error code) | form (a form
                  body with error and error_description) | text (text/plain)
    echo_error    the error code (invalid_grant)
    echo_status   the HTTP status (400)
  GET /_control/echoed lists every form of every secret an echo request
  carried (so a test knows what must never come out the other side).
  The revocation endpoint echoes too when POST /_control/revoke_status has
  {"status": 400, "echo": ..., "echo_pad": ..., "echo_in": ...}.

Control API (JSON in, JSON out):
  POST /_control/reset          forget everything
  POST /_control/default        {behaviour...} merged into the default
  POST /_control/grant          {"grant": "g1", "refresh_token": "g1.0"
                                 (optional: the current RT), behaviour...}
  POST /_control/grants         {"grants": [{"grant": ..., behaviour...}, ...]}
  POST /_control/client         {"client_id", "client_secret" (null: public
                                 client), "basic_only", "json_only"}
  POST /_control/code           {"code", "grant", "redirect_uri",
                                 "code_challenge", "code_challenge_method"
                                 (S256 default | plain), "scope", "extra"}
  POST /_control/revoke_status  {"status": 500}
  POST /_control/tenant         {"tenant": "t1", behaviour...}
  GET  /_control/stats          counters, revocations, last 500 requests
  GET  /_control/grant/<g>      {"current_refresh_token", "issued", "requests"}
Token requests are counted on arrival, before any latency or hang.
"""
import argparse, base64, collections, hashlib, json, os, signal, socketserver
import re, socket, ssl, sys, threading, time, traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import (parse_qs, quote, quote_plus, unquote, unquote_plus, urlencode,
                          urlsplit)

BUILTIN = {"mode": "ok", "rotate": False, "strict": False, "expires_in": 3600,
           "expires_in_style": "number", "refresh_token_expires_in": None,
           "response_format": "json", "extra": {}, "latency_ms": 0,
           "hang_seconds": 30, "retry_after": 2,
           "grace_seconds": None, "answer_delay_ms": 0, "mode_times": 0,
           "echo": "", "echo_pad": 0, "echo_in": "error_description",
           "echo_error": "invalid_grant", "echo_status": 400}
JSON, FORM = "application/json", "application/x-www-form-urlencoded"
WWW_AUTH = {"WWW-Authenticate": 'Basic realm="fake-oauth"'}
# mode -> (status, body, content type)
CANNED = {
    "invalid_grant": (400, {"error": "invalid_grant",
                            "error_description": "Token has been expired or revoked."}, JSON),
    "invalid_client": (401, {"error": "invalid_client",
                             "error_description": "client authentication failed"}, JSON),
    "error200": (200, {"ok": False, "error": "invalid_refresh_token"}, JSON),
    "github_error": (200, urlencode({
        "error": "bad_refresh_token",
        "error_description": "The refresh token passed is incorrect or expired.",
        "error_uri": "https://docs.github.com/apps"}), FORM),
    "hubspot_bad": (400, {"status": "BAD_REFRESH_TOKEN",
                          "message": "missing or invalid refresh token"}, JSON),
    "atlassian403": (403, {"error": "invalid_grant",
                           "error_description": "Unknown or invalid refresh token."}, JSON),
    "503": (503, "Service Unavailable\n", "text/plain"),
    "429": (429, {"error": "rate_limited"}, JSON),
    "garbage": (200, "<html>not json</html>", "text/html"),
    "no_access_token": (200, {"token_type": "bearer"}, JSON),
    "unauthorized_client": (400, {"error": "unauthorized_client",
                                  "error_description": "client not allowed for this tenant"}, JSON),
    "401": (401, "<html>Unauthorized</html>", "text/html"),
}
CHOICES = {"mode": set(CANNED) | {"ok", "hang", "drop", "resent_drop", "echo"},
           "echo_in": {"error_description", "error", "form", "text"},
           "expires_in_style": {"number", "string", "omit"},
           "response_format": {"json", "form", "form_unless_accept"}}
REDACTED = ("client_secret", "refresh_token", "code", "code_verifier")


def validate_behaviour(d):
    """Check and normalise behaviour fields (Perl may send "1" for true, etc.)."""
    out = {}
    for k, v in d.items():
        if k not in BUILTIN:
            raise ValueError("unknown behaviour field %r" % k)
        if isinstance(BUILTIN[k], bool):
            v = v if isinstance(v, bool) else str(v).lower() not in ("", "0", "false", "no")
        elif isinstance(BUILTIN[k], int) or (k in ("refresh_token_expires_in", "grace_seconds")
                                             and v is not None):
            v = int(v)
        elif k in ("mode", "echo", "echo_in", "echo_error"):
            v = str(v)
        if v not in CHOICES.get(k, (v,)) or (k == "extra" and not isinstance(v, dict)):
            raise ValueError("bad value %r for %s" % (v, k))
        out[k] = v
    return out


def split_rt(rt):
    """'g1.3' -> ('g1', 3); 'g1' -> ('g1', 0)."""
    grant, dot, n = rt.rpartition(".")
    if not dot:
        return rt, 0
    return grant, int(n) if n.isdigit() else 0


def err(status, error, description, headers=None):
    return status, {"error": error, "error_description": description}, JSON, headers or {}


def canned(beh):
    """The fixed answer of an error mode, or None for ok / hang."""
    if beh["mode"] not in CANNED:
        return None
    status, body, ctype = CANNED[beh["mode"]]
    headers = {"Retry-After": beh["retry_after"]} if status == 429 else \
        WWW_AUTH if status == 401 else {}
    return status, body, ctype, headers


def render_token(beh, tok, extra, accept, force_json=False):
    body = {"access_token": tok["access_token"], "token_type": "Bearer"}
    style = beh["expires_in_style"]
    if style != "omit":
        body["expires_in"] = str(beh["expires_in"]) if style == "string" else beh["expires_in"]
    if tok.get("scope"):
        body["scope"] = tok["scope"]
    if tok.get("refresh_token"):
        body["refresh_token"] = tok["refresh_token"]
    if beh["refresh_token_expires_in"] is not None and not tok.get("cc"):
        body["refresh_token_expires_in"] = beh["refresh_token_expires_in"]
    body.update(extra)
    fmt = "json" if force_json else beh["response_format"]
    if fmt == "form" or (fmt == "form_unless_accept" and JSON not in accept.lower()):
        body["token_type"] = "bearer"
        enc = {k: (json.dumps(v) if isinstance(v, (bool, dict, list)) else str(v))
               for k, v in body.items()}
        return 200, urlencode(enc), FORM, {}
    return 200, body, JSON, {}


def _json_inner(v, ascii_only, slash=False, upper=False):
    out = json.dumps(v, ensure_ascii=ascii_only)[1:-1]
    if slash:
        out = out.replace("/", "\\/")
    if upper:
        out = re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), out)
    return out


ECHO_FORMS = {
    "raw": lambda v: v,
    "url": lambda v: quote(v, safe="-._~"),
    "url_lower": lambda v: re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(),
                                  quote(v, safe="-._~")),
    "url_plus": lambda v: quote_plus(v, safe="-._~"),
    "url_plus_lower": lambda v: re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(),
                                       quote_plus(v, safe="-._~")),
    "json": lambda v: _json_inner(v, False),
    "json_slash": lambda v: _json_inner(v, False, slash=True),
    "json_u": lambda v: _json_inner(v, True),
    "json_u_upper": lambda v: _json_inner(v, True, upper=True),
    "b64": lambda v: base64.b64encode(v.encode("utf-8")).decode("ascii"),
}
SECRET_VALUES = ("client_secret", "refresh_token", "code", "code_verifier", "token",
                 "authorization", "basic_raw")


def echo_values(handler, params, raw_body):
    """The values an echo template may name, from the request as it came."""
    p = params or {}
    auth = handler.headers.get("Authorization") or ""
    vals = {k: str(p[k]) for k in ("client_id", "client_secret", "refresh_token", "code",
                                   "code_verifier", "token") if p.get(k) is not None}
    if auth[:6].lower() == "basic ":
        vals["authorization"] = auth[6:].strip()
        try:
            cid, _, sec = base64.b64decode(vals["authorization"]).decode("utf-8").partition(":")
        except ValueError:
            cid, sec = "", ""
        vals["client_id"], vals["client_secret"] = unquote_plus(cid), unquote_plus(sec)
    if "client_secret" in vals:
        pair = "%s:%s" % (vals.get("client_id", ""), vals["client_secret"])
        vals["basic_raw"] = base64.b64encode(pair.encode("utf-8")).decode("ascii")
    vals["headers"] = "".join("%s: %s\r\n" % (k, v) for k, v in handler.headers.items())
    vals["body"] = raw_body.decode("utf-8", "replace")
    return vals


def render_echo(template, vals):
    def one(m):
        name, _, form = m.group(1).partition("|")
        return ECHO_FORMS[form or "raw"](vals.get(name, ""))
    return re.sub(r"\{([a-z_]+(?:\|[a-z_0-9]+)?)\}", one, template)


def echo_answer(beh, vals):
    """-> (status, body, content type, headers) of an echo answer."""
    text = "." * beh["echo_pad"] + render_echo(beh["echo"], vals)
    where, status = beh["echo_in"], beh["echo_status"]
    if where == "error":
        return status, {"error": text}, JSON, {}
    if where == "form":
        return status, urlencode({"error": beh["echo_error"], "error_description": text}), FORM, {}
    if where == "text":
        return status, text, "text/plain", {}
    return status, {"error": beh["echo_error"], "error_description": text}, JSON, {}


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.default = {}       # behaviour overrides set by /_control/default
        self.grants = {}        # name -> {behaviour, current, issued, requests}
        self.codes, self.clients, self.revocations = {}, {}, []
        self.total, self.cc_issued, self.revoke_status = 0, 0, 200
        self.api_calls = 0      # requests to the resource endpoint /api/...
        self.by_rt, self.by_grant, self.by_code = (collections.Counter() for _ in range(3))
        self.requests = collections.deque(maxlen=500)
        self.tenants, self.by_tenant = {}, collections.Counter()
        self.mode_used = collections.Counter()     # (scope, name) -> requests given the mode
        self.echoed = set()     # every form of every secret an echo request carried
        self.revoke_echo = None

    def record_secrets(self, vals):
        for name in SECRET_VALUES:
            if vals.get(name):
                for f in ECHO_FORMS.values():
                    self.echoed.add(f(vals[name]))

    def grant(self, name, rt=None):
        if name not in self.grants:
            self.grants[name] = {"behaviour": {}, "current": rt or name + ".0",
                                 "issued": 0, "requests": 0,
                                 "previous": None, "rotated_at": 0.0}
        return self.grants[name]

    def behaviour(self, grant=None, tenant=None, consume=False):
        """default < grant < tenant; with consume, a mode limited by
        mode_times counts this request (then reverts to ok)."""
        b = dict(BUILTIN, **self.default)
        owner = ("default", "")
        for scope, name, over in (("grant", grant, self.grants.get(grant, {}).get("behaviour")),
                                  ("tenant", tenant, self.tenants.get(tenant))):
            if over:
                b.update(over)
                if "mode" in over:
                    owner = (scope, name)
        b["extra"] = dict(b["extra"])
        if b["mode"] != "ok" and b["mode_times"] > 0:
            if self.mode_used[owner] >= b["mode_times"]:
                b["mode"] = "ok"
            elif consume:
                self.mode_used[owner] += 1
        return b

    def check_client(self, auth, cid, secret, params, body_format):
        """None when the client is acceptable, else an error answer."""
        if not self.clients:
            return None
        pairs = [(cid, secret)]
        if auth == "basic":     # RFC 6749 2.3.1: form-encoded before base64
            pairs.append((unquote_plus(cid), unquote_plus(secret)))
        for c, s in pairs:
            cl = self.clients.get(c)
            if cl and (cl["client_secret"] == s or (cl["client_secret"] is None and not s)):
                break
        else:
            cl = None
        if cl is None or (cl["basic_only"] and (auth != "basic" or "client_secret" in params)):
            return err(401, "invalid_client", "client authentication failed", WWW_AUTH)
        if cl["json_only"] and body_format != "json":
            return err(400, "invalid_request", "this client must send a JSON body")
        return None


class Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # headers and body go in two writes
    protocol_version = "HTTP/1.1"
    server_version = "FakeOAuth/1.0"
    timeout = 300
    record = None               # stats entry of the current token request
    served = 0                  # requests read on this connection so far

    def log_message(self, fmt, *args):
        self.server.log("%s %s" % (self.client_address[0], fmt % args))

    def send(self, status, body, ctype=JSON, headers=None):
        data = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
        if self.record is not None:
            with self.server.state.lock:
                self.record["status"] = status
        self.send_response(status)
        for k, v in dict({"Content-Type": ctype, "Content-Length": len(data),
                          "Cache-Control": "no-store"}, **(headers or {})).items():
            self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):        # clients send Content-Length (no chunked bodies)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def read_params(self):
        """-> (params, "json"|"form"); params is None for malformed JSON."""
        raw = self.raw_body = self.read_body()
        mime = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if mime == JSON or mime.endswith("+json"):
            try:
                obj = json.loads(raw.decode("utf-8") or "{}")
            except ValueError:
                obj = None
            return (obj if isinstance(obj, dict) else None), "json"
        qs = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in qs.items()}, "form"

    def client_auth(self, params):
        """-> (auth, client_id, client_secret); auth is basic|post|none."""
        h = self.headers.get("Authorization") or ""
        if h[:6].lower() == "basic ":
            try:
                dec = base64.b64decode(h[6:].strip()).decode("utf-8")
            except ValueError:
                dec = ""
            cid, _, secret = dec.partition(":")
            return "basic", cid, secret
        cid = None if params.get("client_id") is None else str(params["client_id"])
        if "client_secret" in params:
            return "post", cid, str(params["client_secret"])
        return "none", cid, None

    def do_GET(self):
        self.dispatch(post=False)

    def do_POST(self):
        self.dispatch(post=True)

    def dispatch(self, post):
        self.record = None      # keep-alive: one handler serves many requests
        self.served += 1
        path = urlsplit(self.path).path
        try:
            if path.startswith("/_control/"):
                self.control_post(path) if post else self.control_get(path)
            elif post and is_token_path(path):
                self.token(path)
            elif post and path.endswith("/revoke"):
                self.revoke()
            elif path.startswith("/api/") and not is_token_path(path):
                self.resource(path)
            elif is_token_path(path) or path.endswith("/revoke"):
                self.send(405, {"error": "method_not_allowed"}, headers={"Allow": "POST"})
            else:
                self.read_body()
                self.send(404, {"error": "not_found"})
        except (ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            try:
                self.send(500, {"error": "server_error", "error_description": "provider bug"})
            except OSError:
                pass

    # --- resource endpoint (the examples' API) ---------------------------
    def resource(self, path):
        """Any GET under /api/: 200 {"path", "grant"} for the newest access
        token issued to a grant, 401 (WWW-Authenticate: Bearer
        error="invalid_token") for any other: one never issued, one
        superseded by a refresh, one whose grant was revoked."""
        self.read_body()
        auth = self.headers.get("Authorization", "")
        tok = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        st = self.server.state
        ok_grant = None
        m = re.fullmatch(r"at-(.+)-(\d+)", tok)
        with st.lock:
            st.api_calls += 1
            if m:
                g = st.grants.get(m.group(1))
                if (g and g["issued"] == int(m.group(2))
                        and all(r["token"] != tok for r in st.revocations)):
                    ok_grant = m.group(1)
        if ok_grant is None:
            return self.send(401, {"error": "invalid_token"}, headers={
                "WWW-Authenticate": 'Bearer error="invalid_token"'})
        return self.send(200, {"path": path, "grant": ok_grant})

    # --- token endpoint --------------------------------------------------
    def token(self, path):
        params, body_format = self.read_params()
        p = params or {}
        gt = str(p.get("grant_type", ""))
        auth, cid, secret = self.client_auth(p)
        st = self.server.state
        grant = rt = code = None
        tenant = tenant_of(path)
        with st.lock:           # count on arrival
            st.total += 1
            if tenant is not None:
                st.by_tenant[tenant] += 1
            if gt == "refresh_token" and p.get("refresh_token"):
                rt = str(p["refresh_token"])
                grant = split_rt(rt)[0]
                st.by_rt[rt] += 1
                st.grant(grant, rt)
            elif gt == "authorization_code" and p.get("code"):
                code = str(p["code"])
                st.by_code[code] += 1
                if code in st.codes:
                    grant = st.codes[code]["grant"]
                    st.grant(grant)
            if grant is not None:
                st.by_grant[grant] += 1
                st.grants[grant]["requests"] += 1
            self.record = {
                "path": path, "grant_type": gt, "auth": auth, "client_id": cid,
                "content_type": self.headers.get("Content-Type"),
                "accept": self.headers.get("Accept"), "body_format": body_format,
                "params": {k: ("<redacted>" if k in REDACTED else v) for k, v in p.items()},
                "headers": {k.lower(): v for k, v in self.headers.items()
                            if k.lower() != "authorization"}}
            st.requests.append(self.record)
            reused = self.served > 1
            beh = st.behaviour(grant, tenant, consume=not (
                reused and st.behaviour(grant, tenant)["mode"] == "resent_drop"))
            if beh["mode"] == "resent_drop" and reused:
                self.record["status"] = "closed_unprocessed"
            self.server.log("token request %s" % json.dumps(self.record))
        if beh["mode"] == "resent_drop" and reused:
            # the dead keep-alive connection: read, closed, nothing sent back
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        delay = beh["latency_ms"] / 1000.0
        if beh["mode"] == "hang":
            delay += beh["hang_seconds"]
        if beh["mode"] == "echo":
            vals = echo_values(self, params, self.raw_body)
            with st.lock:
                st.record_secrets(vals)
            return self.send(*echo_answer(beh, vals))
        if delay > 0:
            time.sleep(delay)
        with st.lock:
            resp = self.token_answer(st, params, body_format, gt, auth, cid, secret,
                                     rt, code, grant, beh)
            if beh["mode"] in ("drop", "resent_drop") or beh["answer_delay_ms"] > 0:
                self.record["status"] = "delayed" if beh["mode"] == "ok" else "dropped"
        if beh["mode"] in ("drop", "resent_drop"):
            # processed (and rotated), never answered: close the socket
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if beh["answer_delay_ms"] > 0:
            time.sleep(beh["answer_delay_ms"] / 1000.0)
        self.send(*resp)

    def token_answer(self, st, params, body_format, gt, auth, cid, secret,
                     rt, code, grant, beh):
        """Runs under the state lock; -> (status, body, content type, headers)."""
        if params is None:
            return err(400, "invalid_request", "malformed JSON body")
        accept = self.headers.get("Accept") or ""
        answer = st.check_client(auth, cid, secret, params, body_format)
        if answer is None and gt not in ("refresh_token", "authorization_code",
                                         "client_credentials"):
            answer = err(400, "unsupported_grant_type", "grant_type %r not supported" % gt)
        if answer is None and gt == "refresh_token" and rt is None:
            answer = err(400, "invalid_request", "missing refresh_token")
        if answer is None and gt == "authorization_code" and code is None:
            answer = err(400, "invalid_request", "missing code")
        if answer is not None or canned(beh):
            return answer or canned(beh)
        # modes drop, resent_drop: processed like ok, then the answer is thrown away
        if gt == "client_credentials":
            st.cc_issued += 1
            tok = {"access_token": "cc-%s-%d" % (cid or "anonymous", st.cc_issued),
                   "scope": params.get("scope"), "cc": True}
            return render_token(beh, tok, {}, accept, force_json=True)
        if gt == "refresh_token":
            g = st.grants[grant]
            in_grace = (beh["grace_seconds"] is not None and rt == g["previous"]
                        and time.monotonic() - g["rotated_at"] <= beh["grace_seconds"])
            if beh["strict"] and rt != g["current"] and not in_grace:
                return err(400, "invalid_grant", "refresh token is not current (reused?)")
            new_rt = None
            if beh["rotate"]:
                n = max(split_rt(g["current"])[1], split_rt(rt)[1]) + 1
                if rt == g["current"]:      # the grace window counts from here
                    g["previous"], g["rotated_at"] = rt, time.monotonic()
                new_rt = g["current"] = "%s.%d" % (grant, n)
            g["issued"] += 1
            tok = {"access_token": "at-%s-%d" % (grant, g["issued"]),
                   "scope": params.get("scope"), "refresh_token": new_rt}
            return render_token(beh, tok, beh["extra"], accept)
        c = st.codes.get(code)          # authorization_code
        if c is None:
            return err(400, "invalid_grant", "unknown authorization code")
        if c["used"]:
            return err(400, "invalid_grant", "code already used")
        if c["redirect_uri"] is not None and params.get("redirect_uri") != c["redirect_uri"]:
            return err(400, "invalid_grant", "redirect_uri mismatch")
        if c["code_challenge"]:
            verifier = str(params.get("code_verifier") or "")
            if not verifier:
                return err(400, "invalid_grant", "code_verifier required")
            if c["code_challenge_method"] != "plain":
                digest = hashlib.sha256(verifier.encode("utf-8")).digest()
                verifier = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
            if verifier != c["code_challenge"]:
                return err(400, "invalid_grant", "PKCE verification failed")
        c["used"] = True
        g = st.grants[grant]
        g["issued"] += 1
        tok = {"access_token": "at-%s-%d" % (grant, g["issued"]),
               "scope": c["scope"] or params.get("scope"), "refresh_token": g["current"]}
        return render_token(beh, tok, dict(beh["extra"], **c["extra"]), accept)

    # --- revocation (RFC 7009) -------------------------------------------
    def revoke(self):
        params = self.read_params()[0] or {}
        auth, cid, _ = self.client_auth(params)
        st = self.server.state
        with st.lock:
            st.revocations.append({"token": params.get("token"),
                                   "token_type_hint": params.get("token_type_hint"),
                                   "client_id": cid, "auth": auth})
            status = st.revoke_status
            echo = st.revoke_echo
            if echo:
                vals = echo_values(self, params, self.raw_body)
                st.record_secrets(vals)
        if echo:
            return self.send(*echo_answer(dict(BUILTIN, echo_status=status, **echo), vals))
        self.send(status, {} if status < 300 else
                  {"error": "invalid_request" if status < 500 else "server_error"})

    # --- control API -----------------------------------------------------
    def control_get(self, path):
        st = self.server.state
        with st.lock:
            out = None
            if path == "/_control/echoed":
                out = {"forms": sorted(st.echoed)}
            elif path == "/_control/stats":
                out = {"total": st.total, "by_refresh_token": st.by_rt,
                       "by_grant": st.by_grant, "by_code": st.by_code,
                       "by_tenant": st.by_tenant, "api_calls": st.api_calls,
                       "revocations": st.revocations, "requests": list(st.requests)}
            elif path.startswith("/_control/grant/"):
                name = unquote(path[len("/_control/grant/"):])
                g = st.grants.get(name) or {"current": None, "issued": 0, "requests": 0}
                out = {"exists": name in st.grants, "current_refresh_token": g["current"],
                       "issued": g["issued"], "requests": g["requests"],
                       "behaviour": st.behaviour(name)}
            body = json.dumps(out)      # serialise while holding the lock
        self.send(200, body) if out else self.send(404, {"error": "unknown control endpoint"})

    def control_post(self, path):
        try:
            body = json.loads(self.read_body().decode("utf-8") or "{}")
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            with self.server.state.lock:
                ok = self.control_apply(self.server.state, path[len("/_control/"):], body)
        except (ValueError, KeyError, TypeError) as e:
            return self.send(400, {"error": "bad control request: %s" % e})
        self.send(200, {"ok": True}) if ok else self.send(404, {"error": "unknown control endpoint"})

    @staticmethod
    def control_apply(st, action, body):
        if action == "reset":
            st.reset()
        elif action == "default":
            st.default.update(validate_behaviour(body))
        elif action == "grants":
            for g in body["grants"]:
                Handler.control_apply(st, "grant", g)
        elif action == "grant":
            body = dict(body)
            name, rt = str(body.pop("grant")), body.pop("refresh_token", None)
            behaviour = validate_behaviour(body)
            g = st.grant(name)
            g["behaviour"].update(behaviour)
            if "mode" in behaviour or "mode_times" in behaviour:
                st.mode_used[("grant", name)] = 0
            if rt is not None:
                g["current"] = str(rt)
        elif action == "client":
            st.clients[str(body["client_id"])] = {
                "client_secret": body.get("client_secret"),
                "basic_only": bool(body.get("basic_only")),
                "json_only": bool(body.get("json_only"))}
        elif action == "code":
            c = {k: body.get(k) for k in ("redirect_uri", "code_challenge",
                                          "code_challenge_method", "scope")}
            c.update(grant=str(body["grant"]), extra=dict(body.get("extra") or {}), used=False)
            st.codes[str(body["code"])] = c
        elif action == "revoke_status":
            st.revoke_status = int(body["status"])
            echo = {k: body[k] for k in ("echo", "echo_pad", "echo_in", "echo_error") if k in body}
            st.revoke_echo = validate_behaviour(echo) if echo.get("echo") else None
        elif action == "tenant":
            body = dict(body)
            name = str(body.pop("tenant"))
            st.tenants.setdefault(name, {}).update(validate_behaviour(body))
            st.mode_used[("tenant", name)] = 0
        else:
            return False
        return True


def is_token_path(path):
    return path.endswith(("/token", "/oauth.v2.access", "/access_token"))


def tenant_of(path):
    """'/t/acme/oauth2/token' -> 'acme'; None without a tenant prefix."""
    parts = path.split("/")
    return unquote(parts[2]) if len(parts) > 3 and parts[1] == "t" and parts[2] else None


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # bursts of concurrent refreshes (benchmarks)
    block_on_close = False

    def __init__(self, addr, ssl_ctx, logpath):
        self.ssl_ctx, self.state, self.loglock = ssl_ctx, State(), threading.Lock()
        self.logfile = open(logpath, "a", encoding="utf-8") if logpath else None
        super().__init__(addr, Handler)

    def server_bind(self):      # skip HTTPServer's getfqdn() lookup
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address):
        # Runs in the connection's thread: a slow TLS handshake cannot stall accept().
        if self.ssl_ctx is not None:
            try:
                request.settimeout(10)
                request = self.ssl_ctx.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except OSError as e:        # ssl.SSLError is an OSError
                return self.log("TLS handshake with %s failed: %s" % (client_address[0], e))
        try:
            self.RequestHandlerClass(request, client_address, self)
        finally:
            if self.ssl_ctx is not None:
                request.close()

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            super().handle_error(request, client_address)

    def log(self, msg):
        if self.logfile:
            with self.loglock:
                self.logfile.write("%s %s\n" % (time.strftime("%H:%M:%S"), msg))
                self.logfile.flush()


def main():
    ap = argparse.ArgumentParser(description="fake OAuth provider for tests")
    ap.add_argument("--port", type=int, default=0)
    for opt in ("--port-file", "--cert", "--key", "--log"):
        ap.add_argument(opt)
    args = ap.parse_args()
    if bool(args.cert) != bool(args.key):
        ap.error("--cert and --key must be given together")
    ctx = None
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
    srv = Server(("127.0.0.1", args.port), ctx, args.log)

    def stop(signum, frame):    # shutdown() waits for serve_forever: other thread
        threading.Thread(target=srv.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    port = srv.server_address[1]
    if args.port_file:
        tmp = "%s.tmp.%d" % (args.port_file, os.getpid())
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    srv.log("listening on %s://127.0.0.1:%d" % ("https" if ctx else "http", port))
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
        srv.log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
