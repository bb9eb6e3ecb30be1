#!/usr/bin/python3
"""Run test/provider.py (the fake OAuth provider) with a deeper listen queue.

    provider_bench.py PROVIDER_PY PID_FILE tuned|stock [provider.py options...]

Writes its pid to PID_FILE.  "stock" runs provider.py exactly as it is.

socketserver's default listen backlog is 5.  The refresh worker opens up to
oauth.max_concurrent_refreshes connections at once; with a backlog of 5 most
of a burst of 64 overflows the accept queue (TcpExtListenOverflows), those
connections sit until the kernel retransmits the SYN-ACK (1 s, 3 s, 7 s, ...),
and the benchmark ends up measuring the kernel's retransmission timer instead
of the extension.

It also turns Nagle's algorithm off on the provider's sockets
(StreamRequestHandler.disable_nagle_algorithm).  BaseHTTPRequestHandler sends
the headers and the body of an answer in two writes; on a keep-alive
connection the second write waits for the client's delayed ACK, which adds
about 40 ms to every answer after the first -- close to the 50 ms provider
latency the benchmarks simulate.  Everything else is test/provider.py
unchanged.
"""
import importlib.util
import os
import sys


def main():
    path, pid_file, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(pid_file, "w") as f:
        f.write("%d\n" % os.getpid())
    spec = importlib.util.spec_from_file_location("fake_provider", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if mode == "tuned":
        mod.Server.request_queue_size = 1024
        mod.Handler.disable_nagle_algorithm = True
    elif mode != "stock":
        sys.exit("mode must be tuned or stock")
    sys.argv = [path] + sys.argv[4:]
    return mod.main()


if __name__ == "__main__":
    sys.exit(main())
