"""Secrets (broker password, TLS client key) from systemd credentials or plain files.

A secret reference in the station file is either a file path or `credential:NAME`. A credential is
looked up in $CREDENTIALS_DIRECTORY, which systemd fills from LoadCredential= (the unit loads the
whole /etc/edge/credentials folder, so a file there named NAME arrives as `edge_NAME`; both names are
tried). Containers can point CREDENTIALS_DIRECTORY at their secrets mount (e.g. /run/secrets).

Secrets never sit in the configuration itself, and a secret file that every local user can read is
refused: on a gateway that is a leak waiting to be found.
"""

from __future__ import annotations

import functools
import os
import ssl
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.config import MqttSettings

CREDENTIAL_PREFIX = "credential:"
UNIT_CREDENTIAL_ID = "edge"  # the ID of LoadCredential=edge:/etc/edge/credentials in systemd/edge.service


class SecretError(Exception):
    """A secret could not be found or read, or is stored unsafely."""


def is_credential(reference: str | Path) -> bool:
    return str(reference).startswith(CREDENTIAL_PREFIX)


def resolve_secret(reference: str | Path, env: Mapping[str, str] | None = None) -> Path:
    """The file a secret reference points at; raises SecretError when it is not there."""
    env = os.environ if env is None else env
    text = str(reference)
    if not is_credential(text):
        path = Path(text)
        if not path.is_file():
            raise SecretError(f"secret file {path} does not exist")
        return path
    name = text[len(CREDENTIAL_PREFIX):]
    folder = env.get("CREDENTIALS_DIRECTORY")
    if not folder:
        raise SecretError(f"{text}: $CREDENTIALS_DIRECTORY is not set (no LoadCredential= in the unit?)")
    for candidate in (Path(folder) / name, Path(folder) / f"{UNIT_CREDENTIAL_ID}_{name}"):
        if candidate.is_file():
            return candidate
    raise SecretError(f"{text}: no credential {name!r} (nor {UNIT_CREDENTIAL_ID}_{name}) in {folder}")


def _check_private(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SecretError(f"cannot stat secret file {path}: {exc}") from exc
    if mode & stat.S_IROTH:
        raise SecretError(f"secret file {path} is readable by every user (mode {stat.filemode(mode)}); chmod o-r it")


def read_secret(reference: str | Path, env: Mapping[str, str] | None = None) -> str:
    """The secret's text without its trailing newline."""
    path = resolve_secret(reference, env)
    _check_private(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"cannot read secret file {path}: {exc}") from exc
    text = text.rstrip("\r\n")
    if not text:
        raise SecretError(f"secret file {path} is empty")
    return text


def client_tls_context(
    ca_file: str | Path | None,
    cert_file: str | Path | None,
    key_file: str | Path | None,
    *,
    verify_hostname: bool = True,
    env: Mapping[str, str] | None = None,
) -> ssl.SSLContext:
    """A TLS 1.2+ client context: broker verified against ca_file (or the system CAs), optional client cert.

    Certificates are public and may be plain paths or credentials; the key must be private.
    """
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if ca_file is not None:
            context.load_verify_locations(cafile=str(resolve_secret(ca_file, env)))
        context.check_hostname = verify_hostname
        if cert_file is not None:
            key_path = None
            if key_file is not None:
                key_path = resolve_secret(key_file, env)
                _check_private(key_path)
            context.load_cert_chain(str(resolve_secret(cert_file, env)), str(key_path) if key_path else None)
    except ssl.SSLError as exc:
        raise SecretError(f"TLS material could not be loaded: {exc}") from exc
    return context


def mqtt_tls_factory(settings: MqttSettings) -> Callable[[], ssl.SSLContext] | None:
    """What MqttLink calls on each connect to get its TLS context; None for a plain mqtt:// url."""
    if not settings.tls_enabled:
        return None
    from edge.config import MqttTls

    tls = settings.tls or MqttTls()
    return functools.partial(
        client_tls_context, tls.ca_file, tls.cert_file, tls.key_file, verify_hostname=tls.verify_hostname
    )


__all__ = ["SecretError", "client_tls_context", "is_credential", "mqtt_tls_factory", "read_secret", "resolve_secret"]
