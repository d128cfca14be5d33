#!/usr/bin/env python3
"""
bench/limits_rss.py PATTERN STELE_BINARY LABEL - the server's RSS under one
hostile pattern of issue 10 (tests/http/hostile_mem.py), for
bench/run_limits.sh. Starts the server on a fresh store, seeds it, then
RSS_ROUNDS rounds (default 2): the hostile client holds on HOLD seconds (default 3) while
another client is served, then leaves; prints one line with the baseline,
each round's peak and the RSS 3 s after the client left (MiB, VmRSS).

  pipeline  800 pipelined GET /streams/big?limit=10000 (10,000 events of
            ~100 B), one connection, never read
  sse       20 SSE subscribers to a stream of 40 events of 512 KiB, never read
  grpc      one HTTP/2 connection, 1,024 $all subscriptions (20,000 events
            of 1 KB), never read; the new build runs with
            --max-streams-per-connection 1024 (its default is 100; the
            old build allowed 1,024)
"""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "http"))
sys.dont_write_bytecode = True
import hostile_mem as H  # noqa: E402
import stele_server  # noqa: E402

pattern, binary, label = sys.argv[1:4]
stele_server.STELE_BIN = binary
hold = float(os.environ.get("HOLD", "3"))
nrounds = int(os.environ.get("RSS_ROUNDS", "2"))
help_text = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True).stdout
args = ["--log-level", "error"]
if pattern == "grpc" and "max-streams-per-connection" in help_text:
    args += ["--max-streams-per-connection", "1024"]
srv = stele_server.Server(args=args).start()
try:
    if pattern == "pipeline":
        H.seed_events(srv.port, "big", 10000, 100)
        hostile, other = (lambda: H.pipeline_unread(srv.port, 800)), "/streams/big?limit=10"
    elif pattern == "sse":
        H.seed_events(srv.port, "large", 40, 512 << 10, per_append=4)
        hostile = lambda: H.sse_unread(srv.port, 20, "/subscribe/streams/large?from=start")  # noqa: E731
        other = "/streams/large?limit=1"
    else:
        H.seed_events(srv.port, "g", 20000, 1000)
        hostile, other = (lambda: H.grpc_subs_unread(srv.port, 1024)), "/streams/g?limit=5"
    time.sleep(1)
    base = H.vm_rss_kb(srv.pid)
    rounds = []
    for _ in range(nrounds):
        rss = H.Rss(srv.pid).start()
        socks = hostile()
        time.sleep(hold)
        t0 = time.monotonic()
        r = stele_server.request(srv.port, "GET", other, timeout=120)
        served = "%d_in_%.3fs" % (r.status, time.monotonic() - t0)
        peak = rss.stop()
        H.close_all(socks)
        time.sleep(3)
        rounds.append("peak=%d after=%d other=%s" % (peak >> 10, H.vm_rss_kb(srv.pid) >> 10, served))
    print("rss pattern=%s build=%s baseline=%d %s (MiB)"
          % (pattern, label, base >> 10, " | ".join(rounds)), flush=True)
finally:
    srv.cleanup()
