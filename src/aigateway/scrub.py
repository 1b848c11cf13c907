"""The node's secrets, and their removal from whatever the gateway relays or logs.

A secret is any setting declared with ``repr=False`` (``config.Settings`` and
``ProviderSettings``): provider keys, client keys, the admin key, and whatever later
settings mark so. :meth:`Scrubber.from_settings` collects them; a :class:`Scrubber`
replaces each occurrence with its mask (``****`` and the last four characters of a long
one, as ``aigateway config`` shows it).

Where it is applied:

- a provider's error answer, before it is read for the client's message
  (:meth:`Scrubber.classifier`), and an error a provider reports inside a stream
  (:meth:`Scrubber.translator`);
- every log line, by :class:`SecretFilter` on the log handler;
- the admin and health documents (``api/ops.py``).

Matching is one compiled regular expression whose alternatives share their prefixes (a
trie), so a line without a secret costs one scan, however many keys there are. Secrets
shorter than ``MIN_LENGTH`` are left alone: they would match ordinary words.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aigateway.config import Settings, mask_secret
from aigateway.errors import GatewayError
from aigateway.providers.base import ProviderFailure, StreamTranslator

MIN_LENGTH = 8

Classifier = Callable[[int, Mapping[str, str], bytes], ProviderFailure]


class Scrubber:
    """Replaces the node's secrets in text and bytes."""

    __slots__ = ("_masks", "_text")

    def __init__(self, secrets: Iterable[str]) -> None:
        words = sorted({s for s in secrets if len(s) >= MIN_LENGTH})
        self._masks = {word: mask_secret(word) for word in words}
        self._text = re.compile(_trie(words)) if words else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Scrubber:
        return cls(secrets_of(settings))

    def __bool__(self) -> bool:
        return self._text is not None

    def text(self, value: str) -> str:
        if self._text is None:
            return value
        return self._text.sub(self._mask, value)

    def data(self, value: bytes) -> bytes:
        """Bytes of any encoding: those that are not UTF-8 pass through unchanged."""
        if self._text is None:
            return value
        text = value.decode("utf-8", "surrogateescape")
        cleaned = self._text.sub(self._mask, text)
        return value if cleaned == text else cleaned.encode("utf-8", "surrogateescape")

    def error(self, error: GatewayError) -> GatewayError:
        """``error`` with its message scrubbed (in place: it is about to be raised)."""
        message = self.text(error.message)
        if message != error.message:
            error.message = message
            error.args = (message,)
        return error

    def classifier(self, classify: Classifier) -> Classifier:
        """``classify`` fed a provider's error body with the secrets taken out."""
        if self._text is None:
            return classify

        def scrubbed(status: int, headers: Mapping[str, str], body: bytes) -> ProviderFailure:
            return classify(status, headers, self.data(body))

        return scrubbed

    def translator(self, translator: StreamTranslator) -> StreamTranslator:
        """``translator`` whose in-stream errors carry no secret."""
        return translator if self._text is None else _ScrubbedStream(translator, self)

    def _mask(self, match: re.Match[str]) -> str:
        return self._masks[match.group()]


class _ScrubbedStream:
    __slots__ = ("_scrubber", "_translator")

    def __init__(self, translator: StreamTranslator, scrubber: Scrubber) -> None:
        self._translator = translator
        self._scrubber = scrubber

    def event(self, data: bytes) -> list[bytes]:
        try:
            return self._translator.event(data)
        except GatewayError as exc:
            raise self._scrubber.error(exc) from None

    def end(self) -> list[bytes]:
        try:
            return self._translator.end()
        except GatewayError as exc:
            raise self._scrubber.error(exc) from None


class SecretFilter(logging.Filter):
    """A log handler's filter: the record's message, fields and traceback without secrets.

    Built by ``logging.config`` from the secrets themselves (``aigateway.logs``), since
    Granian configures each worker's logging from a dictionary.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.scrubber = Scrubber(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        # A bad log call (its arguments do not fit its format) must not fail its caller.
        with contextlib.suppress(Exception):
            self._scrub(record)
        return True

    def _scrub(self, record: logging.LogRecord) -> None:
        scrub = self.scrubber.text
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {k: scrub(v) if isinstance(v, str) else v for k, v in fields.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)


def secrets_of(settings: Settings) -> list[str]:
    """Every secret of ``settings``: the values of its fields declared ``repr=False``,
    in it and in its provider settings."""
    found: list[str] = []
    _collect(settings, found)
    return found


def _collect(value: Any, found: list[str], secret: bool = False) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            _collect(getattr(value, item.name), found, secret or not item.repr)
    elif isinstance(value, tuple | list):
        for item in value:
            _collect(item, found, secret)
    elif secret and isinstance(value, str) and value:
        found.append(value)


def _trie(words: list[str]) -> str:
    """One pattern matching any of ``words`` (sorted), the longest where several match."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here
    return _pattern(root)


def _pattern(node: dict[str, Any]) -> str:
    branches: list[str] = []
    for char, child in node.items():
        if char == "":
            continue
        chain = re.escape(char)
        while len(child) == 1 and "" not in child:  # a run without a branch: no group
            ((char, child),) = child.items()
            chain += re.escape(char)
        branches.append(chain + _pattern(child))
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if "" in node:  # a word may end here, or go on: prefer going on
        return f"(?:{body})?"
    return body
