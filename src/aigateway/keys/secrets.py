"""New key secrets, and the keyed hash that is all the store keeps of them.

A secret is ``sk-agw-`` and 32 random bytes (256 bits, URL-safe base64).  Passwords need a
slow hash because people choose guessable ones; these secrets cannot be guessed, so a
fast keyed hash (BLAKE2b with the node's *pepper* as its key) protects them as well as a
slow one would, and costs about a microsecond per request instead of tens of
milliseconds.  The pepper lives in a file of its own beside the database (mode 0600):
a copy of the database alone cannot even confirm a secret someone holds.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import Final

__all__ = ("PREFIX", "SecretHasher", "load_pepper", "new_id", "new_secret")

PREFIX: Final = "sk-agw-"
PEPPER_BYTES: Final = 32
SHOWN_CHARS: Final = 12  # of a secret, in lists: enough to tell keys apart


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def new_id() -> str:
    return "key_" + secrets.token_hex(8)


def shown_prefix(secret: str) -> str:
    return secret[:SHOWN_CHARS]


class SecretHasher:
    """The keyed hash of secrets: equal for equal secrets under one pepper."""

    __slots__ = ("_pepper",)

    def __init__(self, pepper: bytes) -> None:
        if len(pepper) < 16:
            raise ValueError("a pepper needs at least 16 bytes")
        self._pepper = pepper

    def digest(self, secret: str) -> bytes:
        return hashlib.blake2b(
            secret.encode("utf-8", "surrogatepass"), key=self._pepper, digest_size=32
        ).digest()


def load_pepper(path: str) -> bytes:
    """The pepper in ``path``, made (readable by its owner only) on first use; written
    aside and linked into place, so a process never reads a half-written one."""
    try:
        with open(path, "rb") as existing:
            return existing.read()
    except FileNotFoundError:
        pass
    aside = f"{path}.{os.getpid()}.new"
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as new:
        new.write(os.urandom(PEPPER_BYTES))
    try:
        os.link(aside, path)
    except FileExistsError:  # another process made it first: theirs it is
        pass
    finally:
        os.unlink(aside)
    with open(path, "rb") as made:
        return made.read()
