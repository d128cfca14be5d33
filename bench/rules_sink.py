"""
rules_sink.py - the webhook both sides of bench/run_rules.sh deliver to: a
small asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) that
answers 200 at once and records, for each POST, its arrival time and the
event's "created" field (found with a regex, not a JSON parse, to stay
cheap). GET /count returns how many arrived; GET /dump returns
[[arrival_unix_seconds, created_text], ...] and clears the record.

    python3 rules_sink.py [DELAY_MS]   prints "port N" and serves until killed;
                                       with DELAY_MS each POST is answered
                                       that much later (a slow target; other
                                       connections are served meanwhile)
"""
import asyncio
import json
import re
import sys
import time

CREATED = re.compile(rb'"created":"([^"]+)"')
DELAY = float(sys.argv[1]) / 1000 if len(sys.argv) > 1 else 0
records = []


async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line, _, rest = head.partition(b"\r\n")
            method, path = line.split(b" ")[:2]
            n = 0
            for h in rest.split(b"\r\n"):
                if h[:15].lower() == b"content-length:":
                    n = int(h[15:])
            body = await reader.readexactly(n) if n else b""
            out = b""
            if method == b"POST":
                m = CREATED.search(body)
                records.append((time.time(), m.group(1).decode() if m else None))
                if DELAY:
                    await asyncio.sleep(DELAY)
            elif path == b"/count":
                out = str(len(records)).encode()
            elif path == b"/dump":
                out = json.dumps(records).encode()
                records.clear()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print("port %d" % srv.sockets[0].getsockname()[1], flush=True)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
