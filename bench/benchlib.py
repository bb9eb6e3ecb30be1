#!/usr/bin/python3
"""Small helpers for bench/run.sh (python3 stdlib only).

    benchlib.py free-port
    benchlib.py get URL                    print the body
    benchlib.py post URL JSON              print the body
    benchlib.py stats URL                  total grants max_per_grant (from /_control/stats)
    benchlib.py grant-count URL GRANT      token requests for one grant (by_grant)
    benchlib.py latency TXNO FILE... [--since EPOCH]
                                           pgbench -l logs: n p50 p99 max (ms) and
                                           the epoch of the last completion, for
                                           transaction number TXNO (from 1) of each
                                           client; with --since, the times from
                                           EPOCH to each completion instead
"""
import json
import math
import socket
import sys
import urllib.request


def http(method, url, body=None):
    data = None if body is None else body.encode("utf-8")
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode("utf-8")


def nearest_rank(sorted_vals, p):
    """The p-th percentile by the nearest-rank method."""
    k = max(1, math.ceil(p / 100.0 * len(sorted_vals)))
    return sorted_vals[k - 1]


def latency(txno, files, since=None):
    lat, ends = [], []
    for f in files:
        with open(f) as fh:
            for line in fh:
                # client_id transaction_no time script_no time_epoch time_us [lag]
                cols = line.split()
                if len(cols) < 6 or int(cols[1]) != txno:
                    continue
                end = int(cols[4]) + int(cols[5]) / 1e6
                ends.append(end)
                lat.append(int(cols[2]) / 1000.0 if since is None else (end - since) * 1000.0)
    if not lat:
        print("0 0 0 0 0")
        return
    lat.sort()
    print("%d %.2f %.2f %.2f %.6f" % (len(lat), nearest_rank(lat, 50), nearest_rank(lat, 99),
                                      lat[-1], max(ends)))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "free-port":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
        s.close()
    elif cmd == "get":
        print(http("GET", args[0]))
    elif cmd == "post":
        print(http("POST", args[0], args[1]))
    elif cmd == "stats":
        st = json.loads(http("GET", args[0]))
        by = st.get("by_grant") or {}
        print(st["total"], len(by), max(by.values()) if by else 0)
    elif cmd == "grant-count":
        st = json.loads(http("GET", args[0]))
        print((st.get("by_grant") or {}).get(args[1], 0))
    elif cmd == "latency":
        since = None
        if "--since" in args:
            k = args.index("--since")
            since = float(args[k + 1])
            args = args[:k] + args[k + 2:]
        latency(int(args[0]), args[1:], since)
    else:
        sys.exit("unknown command %s" % cmd)


if __name__ == "__main__":
    main()
