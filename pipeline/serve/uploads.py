"""Reading an uploaded image out of a request: body size limit, multipart form
parsing, and a small preview of the upload for the results page.

The standard library's ``cgi`` module is deprecated (and gone in Python 3.13),
so ``multipart/form-data`` is parsed here: the body is held in memory, which the
size limit keeps small, and split on its boundary (RFC 7578).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import BinaryIO

from PIL import Image, ImageOps

from pipeline.errors import PipelineError

# Bodies a little over the limit are read and dropped before answering 413, so
# the browser sees the page instead of a reset connection; beyond this much
# extra the connection is simply closed (a local page has no reason to accept more).
DRAIN_LIMIT = 64 * 1024 * 1024
_CHUNK = 1 << 16


class UploadError(PipelineError):
    """A request body the page cannot use; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close  # the body was not read: the connection cannot be reused


@dataclass(frozen=True)
class Part:
    """One field of a multipart form."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def read_body(stream: BinaryIO, headers: Mapping[str, str], max_bytes: int) -> bytes:
    """The request body, at most ``max_bytes`` long (else :class:`UploadError` 413)."""
    if headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
        raise UploadError("chunked uploads are not supported; send a Content-Length", 411, close=True)
    raw = headers.get("Content-Length")
    if raw is None:
        raise UploadError("the upload has no Content-Length header", 411, close=True)
    try:
        length = int(raw)
    except ValueError:
        length = -1
    if length < 0:
        raise UploadError(f"Content-Length {raw!r} is not a byte count", 400, close=True)
    if length > max_bytes:
        mb = max_bytes / 1_000_000
        message = (f"the upload is {length / 1_000_000:.1f} MB, over this server's limit of {mb:g} MB; "
                   f"choose a smaller image or restart the server with a larger --max-upload-mb")
        if length - max_bytes > DRAIN_LIMIT:
            raise UploadError(message, 413, close=True)
        try:
            _drain(stream, length)
        except OSError:  # the client stopped sending (a timeout) or went away
            raise UploadError(message, 413, close=True) from None
        raise UploadError(message, 413)
    try:
        body = stream.read(length)
    except OSError as exc:  # a silent client times out (the handler's timeout) or disconnects
        raise UploadError(f"the upload stalled or broke off ({exc}); try again", 408, close=True) from None
    if len(body) != length:
        raise UploadError(f"the upload ended after {len(body)} of {length} bytes; try again", 400, close=True)
    return body


def _drain(stream: BinaryIO, length: int) -> None:
    """Read and drop ``length`` bytes (or until the client stops sending)."""
    while length > 0:
        chunk = stream.read(min(_CHUNK, length))
        if not chunk:
            return
        length -= len(chunk)


def _header_params(name: str, value: str) -> Message:
    """A header parsed by the email package, which knows RFC 2231 parameters and quoting."""
    msg = Message()
    msg[name] = value
    return msg


def parse_multipart(body: bytes, content_type: str) -> dict[str, Part]:
    """The fields of a ``multipart/form-data`` body, by name (the first of repeated names wins)."""
    ctype = _header_params("Content-Type", content_type or "")
    if ctype.get_content_type() != "multipart/form-data":
        raise UploadError(f"expected a multipart/form-data upload, got {content_type or 'no Content-Type'!r}; "
                          f"send the image from the page's form", 415)
    boundary = ctype.get_param("boundary")
    if not isinstance(boundary, str) or not 0 < len(boundary) <= 200:
        raise UploadError("the multipart upload has no valid boundary parameter")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    # A leading CRLF lets the first delimiter match like the others.
    chunks = (b"\r\n" + body).split(delimiter)
    fields: dict[str, Part] = {}
    closed = False
    for chunk in chunks[1:]:  # chunks[0] is the preamble
        if chunk.startswith(b"--"):
            closed = True
            break
        part = _parse_part(chunk)
        fields.setdefault(part.name, part)
    if not closed:
        raise UploadError("the multipart upload is truncated (no closing boundary); try again")
    return fields


def _parse_part(chunk: bytes) -> Part:
    """One part: the rest of the delimiter line, headers, a blank line, the data."""
    _, sep, rest = chunk.partition(b"\r\n")
    head, sep2, data = rest.partition(b"\r\n\r\n")
    if not sep or not sep2:
        raise UploadError("a part of the multipart upload has no header block")
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").split("\r\n"):
        key, colon, value = line.partition(":")
        if colon:
            headers[key.strip().lower()] = value.strip()
    disposition = _header_params("Content-Disposition", headers.get("content-disposition", ""))
    name = disposition.get_param("name", header="content-disposition")
    if not isinstance(name, str) or not name:
        raise UploadError("a part of the multipart upload has no field name")
    return Part(name=name, filename=disposition.get_filename(), content_type=headers.get("content-type"), data=data)


def image_field(fields: Mapping[str, Part], name: str = "image") -> Part:
    """The uploaded file under ``name``, which must be present and non-empty."""
    part = fields.get(name)
    if part is None or part.filename is None:
        raise UploadError(f"the upload has no file field {name!r}; choose an image in the page's form")
    if not part.data:
        label = f"{part.filename!r} is" if part.filename else "the chosen file is"
        raise UploadError(f"{label} empty (0 bytes); choose an image file (JPEG, PNG, ...)")
    return part


def preview_png(data: bytes, size: int = 160) -> bytes:
    """The uploaded image as a PNG no larger than ``size`` pixels a side, as people see it
    (EXIF orientation applied, converted to RGB). Call only once the image decoded."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft(img.mode, (size, size))  # JPEG: decode at a reduced scale when possible
        shown = ImageOps.exif_transpose(img).convert("RGB")
    shown.thumbnail((size, size))
    out = io.BytesIO()
    shown.save(out, format="PNG")
    return out.getvalue()
