"""
pg_server.py - a throwaway PostgreSQL cluster for tests: initdb in a
temporary directory, its own port and socket directory, started and stopped
with pg_ctl (as the postgres user when run as root: PostgreSQL refuses to
run as root). Debian's postgresql package provides the binaries; a service
the package may have started on 5432 is never touched.

Local (socket) connections are trusted, TCP ones need a SCRAM password, so
tests can check wrong credentials over TCP.
"""
import glob
import os
import shutil
import socket
import subprocess
import tempfile


def _pgbin():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: int(d.split("/")[-2].split(".")[0]))
    if not dirs:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return dirs[-1]


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class PgServer:
    def __init__(self):
        self.bin = _pgbin()
        self.tmp = tempfile.mkdtemp(prefix="stele-pg-")
        os.chmod(self.tmp, 0o755)
        self.data = os.path.join(self.tmp, "pg")
        self.port = _free_port()
        self.root = os.getuid() == 0
        if self.root:
            shutil.chown(self.tmp, "postgres", "postgres")
        self._as_pg([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres",
                     "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8"],
                    quiet=True)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("port = %d\nlisten_addresses = '127.0.0.1'\n"
                    "unix_socket_directories = '%s'\nfsync = off\n"
                    "shared_buffers = 32MB\nmax_connections = 40\n" % (self.port, self.tmp))

    def _as_pg(self, cmd, quiet=False):
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        out = subprocess.DEVNULL if quiet else None
        subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT if quiet else None)

    def start(self):
        self._as_pg([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l",
                     os.path.join(self.tmp, "pg.log"), "-w", "-t", "120", "start"], quiet=True)
        return self

    def stop(self, mode="fast"):
        self._as_pg([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", mode, "-w",
                     "-t", "120", "stop"], quiet=True)

    def psql(self, sql, db="postgres"):
        """Run sql as the superuser over the socket; rows as lists of strings."""
        r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.tmp, "-p",
                            str(self.port), "-U", "postgres", "-d", db, "-At", "-F", "\t",
                            "-c", sql], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("psql %r: %s" % (sql, r.stderr.strip()))
        return [line.split("\t") for line in r.stdout.splitlines() if line]

    def cleanup(self):
        try:
            self.stop("immediate")
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)
