"""A mosquitto configured as ops would: TLS only, client certificates, passwords and an ACL.

The PKI (a throwaway CA, the broker's certificate for localhost/127.0.0.1, client certificates) is
made with the `openssl` command line for each test session.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .conftest import Mosquitto


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca: Path

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"


def make_pki(folder: Path, clients: tuple[str, ...] = ("edge-01", "observer", "cell-a")) -> Pki:
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command is needed to make test certificates")
    folder.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=edge test CA",
             cwd=folder)
    (folder / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, ext in (("server", "server.ext"), *((client, None) for client in clients)):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", *(("-extfile", ext) if ext else ()), cwd=folder)
        (folder / f"{name}.key").chmod(0o600)
    # A second CA nobody trusts, to prove the broker and clients really verify.
    _openssl("req", "-x509", *ec, "-keyout", "rogue-ca.key", "-out", "rogue-ca.crt", "-days", "2",
             "-subj", "/CN=rogue CA", cwd=folder)
    return Pki(folder, folder / "ca.crt")


class TlsMosquitto(Mosquitto):
    """TLS listener with require_certificate, a password file and an ACL file; no anonymous access."""

    def __init__(self, workdir: Path, pki: Pki, passwords: dict[str, str], acl: str) -> None:
        super().__init__(workdir)
        self.host = "localhost"
        password_file = workdir / "passwords"
        password_file.write_text("")
        for user, password in passwords.items():
            subprocess.run(["mosquitto_passwd", "-b", str(password_file), user, password], check=True,
                           capture_output=True, timeout=30)
        (workdir / "acl").write_text(acl)
        self.config.write_text(
            # Started as root, mosquitto would switch to its own user and lose the 0600 test keys.
            "user root\n"
            f"listener {self.port} 127.0.0.1\n"
            f"cafile {pki.ca}\n"
            f"certfile {pki.cert('server')}\n"
            f"keyfile {pki.key('server')}\n"
            "require_certificate true\n"
            "tls_version tlsv1.2\n"
            "allow_anonymous false\n"
            f"password_file {password_file}\n"
            f"acl_file {workdir / 'acl'}\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
            "log_type notice\n"
        )

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"
