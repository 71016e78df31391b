"""Where a picture in a request comes from: a `data:` URL, a link to one of
our own images (read from the store, never over HTTP), or another site's link
(fetched only as remote_images allows)."""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote, urlsplit

from .errors import InvalidRequest
from .input_images import MAX_INPUT_BYTES, InputImage, load_image
from .remote_images import RemoteImages
from .store import ImageStore

# The path of one of our image links (a key from secrets.token_urlsafe(16)),
# under whatever host name and path prefix the service was reached by.
OUR_LINK = re.compile(r"/image/(?P<key>[A-Za-z0-9_-]{22})/?$")
_DATA_URL = re.compile(r"data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*),", re.IGNORECASE)


def our_image_key(url: str) -> str | None:
    """The image key when a URL has our image path, else None."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https", ""):
        return None
    found = OUR_LINK.search(parts.path)
    return found.group("key") if found else None


class PictureReader:
    """Turns the image URLs a request holds into decoded pictures."""

    def __init__(self, store: ImageStore, remote: RemoteImages, expiration: int):
        self._store = store
        self.remote = remote
        self._expiration = expiration

    def read(self, url: object, param: str, origin: str = "attached") -> InputImage:
        """Decode the picture a URL names.

        :raises InvalidRequest: naming `param` for a malformed or unusable URL
            or picture, an image of ours that has expired, or a link this
            server does not fetch.
        :raises FluxWorkerError: when the store cannot be read right now.
        """
        data, link = self.read_bytes(url, param)
        return load_image(data, param, "link" if link and origin == "attached" else origin, link)

    def read_bytes(self, url: object, param: str) -> tuple[bytes, str | None]:
        """The bytes a URL names, and the link itself (None for a data: URL).

        :raises InvalidRequest, FluxWorkerError: as `read`.
        """
        if not isinstance(url, str) or not url.strip():
            raise InvalidRequest(f"{param} must be a data: URL or a link to an image.",
                                 param=param, code="invalid_image_url")
        url = url.strip()
        if url[:5].lower() == "data:":
            return data_url_bytes(url, param), None
        key = our_image_key(url)
        if key is not None:
            stored = self._store.get(key)
            if stored is not None:
                return stored.data, url
            if not self.remote.enabled:
                raise InvalidRequest(
                    f"The image at {url} is no longer here: pictures are kept for "
                    f"{_duration(self._expiration)}. Attach it, or describe the whole picture.",
                    param=param, code="image_file_not_found")
        return self.remote.fetch(url, param), url


def data_url_bytes(url: str, param: str) -> bytes:
    """The bytes a base64 `data:` URL holds (its media type is not trusted:
    load_image looks at the bytes).

    :raises InvalidRequest: naming `param` for anything else.
    """
    found = _DATA_URL.match(url)
    if not found or "base64" not in found.group("params").lower():
        raise InvalidRequest(f"{param} must be a base64 data: URL (data:image/png;base64,…).",
                             param=param, code="invalid_image_url")
    encoded = unquote(url[found.end():]) if "%" in url[found.end():] else url[found.end():]
    encoded = "".join(encoded.split())
    if len(encoded) > (MAX_INPUT_BYTES // 3 + 1) * 4:
        raise InvalidRequest(f"{param} is over {MAX_INPUT_BYTES // 1024 // 1024} MiB.",
                             param=param, code="image_too_large")
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{param} is not valid base64.", param=param,
                             code="invalid_image_url") from None


def _duration(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} day(s)"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hour(s)"
    return f"{seconds // 60} minute(s)" if seconds >= 60 else f"{seconds} second(s)"
