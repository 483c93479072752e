"""Secrets at rest: the bind passwords of peer servers, sealed with AES-256-GCM.

The key is 32 random bytes kept outside the database, in `<data_dir>/secret.key`
(`load_or_create_key`), so that a copy of the database alone (a backup, a dump) does not
reveal the passwords. A sealed value is `version (1 byte) | nonce (12) | ciphertext+tag`;
the associated data names the column, so a value copied into another column does not open.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from imedge.store.ports import StoreError

log = logging.getLogger(__name__)

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM nonce size of NIST SP 800-38D §8.2; random, as keys are few
VERSION = 1


class SecretBox:
    """Seals and opens short secrets with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise StoreError(f"the encryption key must be {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, context: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), context.encode())
        return bytes([VERSION]) + nonce + sealed

    def open(self, sealed: bytes, context: str, what: str = "") -> str:
        """The plaintext; `StoreError` naming `what` (for the operator) if the value is
        damaged or sealed with another key or `context`."""
        what = what or context
        if len(sealed) < 1 + NONCE_BYTES or sealed[0] != VERSION:
            raise StoreError(f"{what}: the stored secret is damaged (unknown format)")
        nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, context.encode()).decode("utf-8")
        except InvalidTag:
            raise StoreError(
                f"{what}: the stored secret does not open with this encryption key "
                "(was secret.key replaced or lost?)"
            ) from None


def load_or_create_key(path: Path) -> bytes:
    """The key in `path` (base64 text), made on first use readable by the owner only (0600).

    Two processes starting at once create it once: the file is made with O_EXCL and the
    loser reads the winner's key.
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    except OSError as exc:
        raise StoreError(f"cannot create the encryption key {path}: {exc}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64encode(key) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    log.info("created the encryption key for secrets at rest: %s", path)
    return key


def _read_key(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StoreError(f"cannot read the encryption key {path}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is readable by other users; it should be mode 0600", path)
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise StoreError(f"{path} does not hold a base64 key") from None
    if len(key) != KEY_BYTES:
        raise StoreError(f"{path} holds a key of {len(key)} bytes, not {KEY_BYTES}")
    return key
