"""A throwaway PostgreSQL for the sample app's tests and benchmark (tests/infra/test_app_db.py,
bench/upload.py): initdb into a temporary directory, the server on 127.0.0.1 at a free port with
its unix socket in that directory, password authentication (scram-sha-256) for the user `app`.
Debian's binaries (/usr/lib/postgresql/<version>/bin, package postgresql, tools/setup).
PostgreSQL refuses to run as root: as root, the directory is chowned to Debian's `postgres` user
and the binaries run as it (runuser). Stopped and removed on exit, also on failure.

With `tls` (certificates(): a throw-away CA and a server certificate for DNS:localhost, made with
the `openssl` command) the server has `ssl = on` with that certificate and key, and accepts
TCP connections with TLS only (pg_hba.conf `hostssl`).
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


def url(port, password=PASSWORD, db="postgres", host="127.0.0.1"):
    from urllib.parse import quote
    return f"postgres://{USER}:{quote(password, safe='')}@{host}:{port}/{db}"


class Certs:
    """Paths of a throw-away CA (ca.pem) and of a server certificate it signed (server.crt,
    server.key) for DNS:localhost only (not 127.0.0.1), in `dir`."""

    def __init__(self, dir):
        self.dir = dir
        self.ca = os.path.join(dir, "ca.pem")
        self.cert = os.path.join(dir, "server.crt")
        self.key = os.path.join(dir, "server.key")


def certificates(dir):
    """Makes Certs in `dir` (an existing, private directory) with the openssl command: P-256
    keys, valid 2 days, the CA with basicConstraints CA:TRUE, the server's with
    subjectAltName DNS:localhost and extendedKeyUsage serverAuth."""
    c = Certs(dir)
    ca_key = os.path.join(dir, "ca.key")
    csr = os.path.join(dir, "server.csr")
    ext = os.path.join(dir, "server.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature\n"
                "extendedKeyUsage = serverAuth\n"
                "subjectAltName = DNS:localhost\n"
                "subjectKeyIdentifier = hash\n"
                "authorityKeyIdentifier = keyid\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", c.ca, "-days", "2",
         "-subj", "/CN=bake throw-away test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-keyout", c.key, "-out", csr, "-subj", "/CN=localhost"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", c.ca, "-CAkey", ca_key, "-set_serial", "2",
         "-days", "2", "-extfile", ext, "-out", c.cert],
    ):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, (cmd, r.stderr)
    return c


@contextlib.contextmanager
def postgres(fsync=True, tls=None):
    """Yields (connection URL, port, directory) of a running server; stops and removes it after.
    tls: Certs (certificates()) for a server with TLS, and TLS only."""
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
        if tls:
            # Copies the server may read (as root: its user's, the key 0600 as PostgreSQL wants).
            cert, key = os.path.join(tmp, "server.crt"), os.path.join(tmp, "server.key")
            shutil.copyfile(tls.cert, cert)
            shutil.copyfile(tls.key, key)
            os.chmod(key, 0o600)
            if prefix:
                shutil.chown(cert, "postgres")
                shutil.chown(key, "postgres")
            opts += f" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"
            hba = os.path.join(data, "pg_hba.conf")
            with open(hba) as f:
                lines = f.read().splitlines()
            with open(hba, "w") as f:
                f.write("\n".join(line.replace("host ", "hostssl ", 1) if line.startswith("host ") else line
                                  for line in lines) + "\n")
        started = True
        subprocess.run([*prefix, f"{bins}/pg_ctl", "-D", data, "-l", os.path.join(tmp, "log"), "-w",
                        "-t", "30", "-o", opts, "start"], check=True, capture_output=True)
        yield url(port), port, tmp
    finally:
        if started:
            subprocess.run([*prefix, f"{bins}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                           capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
