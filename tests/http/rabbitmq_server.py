"""
rabbitmq_server.py - a throwaway rabbitmq-server for tests (Debian's
rabbitmq-server): its own node name, AMQP, distribution and epmd ports, and
its own data, log and config files in a temporary directory, started with
the package's sbin script and stdin closed. A service the package may have
started (node rabbit@host, port 5672) is never touched. Starting takes
10-20 s, so a test starts it once.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SBIN = None
for d in sorted(os.listdir("/usr/lib/rabbitmq/lib")) if os.path.isdir("/usr/lib/rabbitmq/lib") else []:
    if d.startswith("rabbitmq_server-"):
        SBIN = os.path.join("/usr/lib/rabbitmq/lib", d, "sbin")


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class RabbitServer:
    def __init__(self):
        if not SBIN:
            raise RuntimeError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        self.tmp = tempfile.mkdtemp(prefix="stele-rmq-")
        self.port = _free_port()
        self.node = "stele%d@localhost" % self.port
        with open(os.path.join(self.tmp, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        with open(os.path.join(self.tmp, "rabbitmq.conf"), "w") as f:
            f.write("listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\n" % self.port)
        self.env = dict(os.environ, HOME=self.tmp, RABBITMQ_NODENAME=self.node,
                        RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(_free_port()),
                        ERL_EPMD_PORT=str(_free_port()),
                        RABBITMQ_MNESIA_BASE=os.path.join(self.tmp, "mnesia"),
                        RABBITMQ_LOG_BASE=os.path.join(self.tmp, "log"),
                        RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.tmp, "enabled_plugins"),
                        RABBITMQ_CONFIG_FILE=os.path.join(self.tmp, "rabbitmq"),
                        RABBITMQ_PID_FILE=os.path.join(self.tmp, "pid"))
        self.proc = None

    def start(self, timeout=180):
        log = open(os.path.join(self.tmp, "out.log"), "ab")
        self.proc = subprocess.Popen([os.path.join(SBIN, "rabbitmq-server")], env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("rabbitmq-server exited: " + self.log_tail())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("rabbitmq-server did not start in %ds: %s" % (timeout, self.log_tail()))

    def log_tail(self):
        try:
            return open(os.path.join(self.tmp, "out.log"), errors="replace").read()[-2000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # epmd started for this node (its own port) outlives the broker
        subprocess.run(["epmd", "-port", self.env["ERL_EPMD_PORT"], "-kill"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
