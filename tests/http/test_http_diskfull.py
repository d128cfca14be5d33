#!/usr/bin/env python3
"""
test_http_diskfull.py - a full disk, on a small tmpfs this test mounts
(it needs root; without the right to mount it says so and skips):

1. appends fill the file system until one needs a new log segment that
   does not fit: it fails with 503 NO_SPACE, nothing acknowledged is lost,
   no partial segment (or spare) is left behind, reads go on, and
   /health/ready says why;
2. the server restarts on the full disk: the store opens read-only (log
   line), serves every acknowledged event, refuses appends with 503
   NO_SPACE, and /health/ready reports the reason;
3. space is freed (a ballast file is removed): appends succeed again
   without a restart, the new segment is whole, /health/ready is 200 and
   every acknowledged event (before and after) reads back.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import Client, Server, Suite, request  # noqa: E402

T = Suite("test_http_diskfull")
SEG = 1 << 20          # --segment-size
FS_SIZE = 12 << 20     # the tmpfs
BALLAST = 4 << 20      # removed to give space back
EVENT = 60000          # bytes of data per event

MNT = None


def mount():
    global MNT
    MNT = tempfile.mkdtemp(prefix="stele-diskfull-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % FS_SIZE, "tmpfs", MNT],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(MNT)
        MNT = None
        return r.stderr.strip() or "mount exited with %d" % r.returncode
    return None


def umount():
    if MNT:
        subprocess.run(["umount", "-l", MNT], capture_output=True)
        shutil.rmtree(MNT, ignore_errors=True)


def fill_file(path, size):
    """Write up to `size` bytes (fewer if the disk fills); returns bytes written."""
    n = 0
    chunk = b"\xa5" * 65536
    with open(path, "wb") as f:
        try:
            while n < size:
                f.write(chunk[:min(65536, size - n)])
                f.flush()
                n += min(65536, size - n)
        except OSError:
            pass
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def body(k):
    return ('[{"type":"Filled","data":{"k":%d,"pad":"%s"}}]' % (k, "x" * EVENT)).encode()


def log_files(data):
    d = os.path.join(data, "log")
    return {name: os.path.getsize(os.path.join(d, name)) for name in os.listdir(d)}


def check_no_partial(data, what):
    files = log_files(data)
    T.check("spare.tmp" not in files, "no half-made spare (%s)" % what, None, "none", files)
    bad = {n: s for n, s in files.items() if n.endswith(".seg") and s < SEG}
    T.check(not bad, "every segment file is whole (%s)" % what, None, ">= %d bytes each" % SEG,
            files)


def read_all(port, stream):
    r = request(port, "GET", "/streams/%s?limit=10000" % stream)
    T.expect(r, 200)
    return [e["data"]["k"] for e in r.body["events"]]


@T.case
def disk_full_read_only_then_resume():
    why = mount()
    if why:
        print("  SKIP disk_full_read_only_then_resume: cannot mount a tmpfs (%s); this test "
              "needs root" % why)
        return
    srv = None
    try:
        data = os.path.join(MNT, "data")
        ballast = os.path.join(MNT, "ballast")
        T.check(fill_file(ballast, BALLAST) == BALLAST, "ballast file written")
        srv = Server(["--segment-size", str(SEG)], data_dir=data, name="tmpfs").start()
        c = Client(srv.port)
        acked = []
        refused = None
        for k in range(1000):
            r = c.post("/streams/full", body(k))
            if r.status == 201:
                acked.append(k)
                continue
            refused = r
            break
        T.check(refused is not None, "appends stop when the disk is full", None,
                "a refused append", "%d appends all accepted" % len(acked))
        T.expect(refused, 503, "NO_SPACE")
        T.check("space" in refused.body["error"]["message"], "the message says why",
                refused.req, "no space ...", refused.body)
        T.check(len(acked) >= 10, "some appends fit first", None, ">= 10", len(acked))
        check_no_partial(data, "after the refused append")
        T.check(read_all(srv.port, "full") == acked, "reads while full: every acknowledged "
                "event", None, acked, read_all(srv.port, "full"))
        r = c.get("/health/ready")
        T.expect(r, 503, "NO_SPACE")
        # Whatever room is left goes too (another program filled the disk).
        fill_file(os.path.join(MNT, "filler"), FS_SIZE)
        r = c.post("/streams/full", body(-1))
        T.expect(r, 503, "NO_SPACE")
        c.close()

        # Restart on the full disk: opens read-only.
        T.check(srv.stop() == 0, "clean stop")
        srv.start()
        with open(srv.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace").split("---- start 2")[-1]
        T.check("store is read-only" in text and "code=NO_SPACE" in text,
                "the server says the store opened read-only", None,
                "a 'store is read-only' line", text[-1500:])
        T.check(read_all(srv.port, "full") == acked, "reads after reopening full", None,
                acked, read_all(srv.port, "full"))
        r = request(srv.port, "GET", "/health/ready")
        T.expect(r, 503, "NO_SPACE")
        T.check("read-only" in r.body["error"]["message"], "ready says read-only", r.req,
                "read-only", r.body)
        r = request(srv.port, "POST", "/streams/full", body(-2))
        T.expect(r, 503, "NO_SPACE")
        check_no_partial(data, "after reopening full")

        # Space comes back: appends resume without a restart (the store
        # retries making the segment at most once a second).
        os.unlink(ballast)
        deadline = time.monotonic() + 60
        k = len(acked)
        while True:
            r = request(srv.port, "POST", "/streams/full", body(k))
            if r.status == 201 or time.monotonic() > deadline:
                break
            T.expect(r, 503, "NO_SPACE")
            time.sleep(0.2)
        T.expect(r, 201, what="an append once space is back")
        acked.append(k)
        for k in range(len(acked), len(acked) + 3):
            T.expect(request(srv.port, "POST", "/streams/full", body(k)), 201)
            acked.append(k)
        T.expect(request(srv.port, "GET", "/health/ready"), 200)
        T.check(read_all(srv.port, "full") == acked, "every acknowledged event after resuming",
                None, acked, read_all(srv.port, "full"))
        check_no_partial(data, "after resuming")
        # And it reopens writable, with everything.
        T.check(srv.stop() == 0, "clean stop")
        os.unlink(os.path.join(MNT, "filler"))
        srv.start()
        T.expect(request(srv.port, "GET", "/health/ready"), 200)
        T.check(read_all(srv.port, "full") == acked, "every acknowledged event after a restart",
                None, acked, read_all(srv.port, "full"))
    finally:
        if srv:
            srv.stop()
            srv.cleanup()
        umount()


def private_mount_namespace():
    """Run this script again in a private mount namespace when that is
    possible, so the tmpfs goes away with the process even if it is killed
    (CTest's timeout) before it could unmount."""
    if os.environ.get("STELE_DISKFULL_NS") or not shutil.which("unshare"):
        return
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        return
    env = dict(os.environ, STELE_DISKFULL_NS="1")
    os.execvpe("unshare", ["unshare", "-m", "--propagation", "private", sys.executable,
                           os.path.abspath(__file__)], env)


if __name__ == "__main__":
    private_mount_namespace()
    T.run()
