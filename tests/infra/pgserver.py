"""A throwaway PostgreSQL for the sample app's tests and benchmark (tests/infra/test_app_db.py,
bench/upload.py): initdb into a temporary directory, the server on 127.0.0.1 at a free port with
its unix socket in that directory, password authentication (scram-sha-256) for the user `app`.
Debian's binaries (/usr/lib/postgresql/<version>/bin, package postgresql, tools/setup).
PostgreSQL refuses to run as root: as root, the directory is chowned to Debian's `postgres` user
and the binaries run as it (runuser). Stopped and removed on exit, also on failure.
"""

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile

USER = "app"
PASSWORD = "pw-Zq7!x9 s3cret"  # with characters a URL must escape


def bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                  key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    assert dirs, "no PostgreSQL server in /usr/lib/postgresql/*/bin (tools/setup installs postgresql)"
    return os.path.dirname(dirs[-1])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def url(port, password=PASSWORD, db="postgres"):
    from urllib.parse import quote
    return f"postgres://{USER}:{quote(password, safe='')}@127.0.0.1:{port}/{db}"


@contextlib.contextmanager
def postgres(fsync=True):
    """Yields (connection URL, port, directory) of a running server; stops and removes it after."""
    bins = bindir()
    tmp = tempfile.mkdtemp(prefix="bake-pg-")
    prefix = []
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
        os.chmod(tmp, 0o700)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(tmp, "data")
    pwfile = os.path.join(tmp, "pw")
    with open(pwfile, "w") as f:
        f.write(PASSWORD + "\n")
    if prefix:
        shutil.chown(pwfile, "postgres")
    port = free_port()
    started = False
    try:
        subprocess.run([*prefix, f"{bins}/initdb", "-D", data, "-U", USER, "-A", "scram-sha-256",
                        f"--pwfile={pwfile}", "-E", "UTF8", "--no-instructions"],
                       check=True, capture_output=True)
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c fsync={'on' if fsync else 'off'}"
        started = True
        subprocess.run([*prefix, f"{bins}/pg_ctl", "-D", data, "-l", os.path.join(tmp, "log"), "-w",
                        "-t", "30", "-o", opts, "start"], check=True, capture_output=True)
        yield url(port), port, tmp
    finally:
        if started:
            subprocess.run([*prefix, f"{bins}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                           capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
