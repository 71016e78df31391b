"""Keeping secrets and unencodable text out of what the service says.

Upstream services may echo what we sent them (a token, the account id in a
URL, the prompt) in their error text. Every piece of upstream text passes
through one `Redactor` before it can reach a response or a log line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 4  # shorter values would blank out ordinary words
_SURROGATE = re.compile("[\ud800-\udfff]")


def repair_surrogates(text: str) -> str:
    """Replace lone UTF-16 surrogates (which UTF-8 cannot encode) with U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


class Redactor:
    """Replaces each configured secret, as written or percent-encoded, in text."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also redact these values from now on."""
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET_CHARS:
                self._secrets.update({secret, quote(secret, safe=""), quote(secret)})
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(self._secrets, key=len, reverse=True)
        # Case-insensitive: an upstream may echo an id upper-cased.
        self._pattern = (re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE)
                         if ordered else None)

    def __call__(self, text: str) -> str:
        """Return text with secrets replaced and lone surrogates repaired."""
        text = repair_surrogates(text)
        return self._pattern.sub(REDACTED, text) if self._pattern else text
