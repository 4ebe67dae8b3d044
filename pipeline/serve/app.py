"""Routes of the search page, as a function from a request to a :class:`Response`.

    GET  /                          upload form                       ?epoch=N on every view
    POST /search                    neighbours of an uploaded image   (multipart field "image")
    GET  /image/<id>                neighbours of a dataset image
    GET  /queries                   validation queries, worst first   ?offset=M
    GET  /thumb/<epoch>/<id>.png    an image as the network sees it
    GET  /static/serve.css|.js      the page's style and script

Nothing in a request names a file: ids and epochs are integers matched by the
routes, static files come from a fixed table. :mod:`.server` adapts this to
``http.server``.
"""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, urlsplit

from pipeline.errors import BadImageError, ConfigError, PipelineError
from pipeline.search.locate import SearchUnavailableError
from pipeline.search.preprocess import pixels_png
from pipeline.serve import pages
from pipeline.serve.options import ServeSettings
from pipeline.serve.queries import load_queries, queries_file, validate_command
from pipeline.serve.service import SearchService
from pipeline.serve.uploads import (
    UploadError,
    image_field,
    parse_multipart,
    preview_png,
    read_body,
)

_STATIC_DIR = Path(__file__).with_name("static")
STATIC = {"serve.css": "text/css; charset=utf-8", "serve.js": "text/javascript; charset=utf-8"}
HTML = "text/html; charset=utf-8"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = HTML
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False  # the request body was not read: close the connection after answering


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: BinaryIO


class HttpError(Exception):
    """A request refused with ``status`` and a sentence for the user."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, dict(headers or {})


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    values = request.query.get(name)
    if not values:
        return default
    if not re.fullmatch(r"\d{1,9}", values[0]):
        raise HttpError(400, f"{name} = {values[0]!r} is not a whole number")
    return int(values[0])


class SearchApp:
    """The page's request handling over one experiment's search indexes."""

    def __init__(self, service: SearchService, settings: ServeSettings, default_epoch: int) -> None:
        self.service, self.settings, self.default_epoch = service, settings, default_epoch
        self.routes: list[tuple[re.Pattern[str], dict[str, Callable[..., Response]]]] = [
            (re.compile(r"/"), {"GET": self.index}),
            (re.compile(r"/search"), {"POST": self.search}),
            (re.compile(r"/image/(\d{1,12})"), {"GET": self.image}),
            (re.compile(r"/queries"), {"GET": self.queries}),
            (re.compile(r"/thumb/(\d{1,9})/(\d{1,12})\.png"), {"GET": self.thumb}),
            (re.compile(r"/static/([a-z]+\.(?:css|js))"), {"GET": self.static}),
        ]

    # -- dispatch -------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: BinaryIO) -> Response:
        """Answer one request; every refusal is a readable page with the right status."""
        url = urlsplit(target)
        request = Request(method, url.path, parse_qs(url.query), headers, body)
        epochs = self.service.epochs()
        try:
            shown = self._epoch_param(request)
        except HttpError:
            shown = self.default_epoch
        # An error page links back to an epoch that can be shown.
        shown = shown if shown in epochs else (self.default_epoch if self.default_epoch in epochs else None)
        frame = pages.Frame(self.service.experiment, shown, epochs)
        try:
            return self._dispatch(request)
        except HttpError as exc:
            return self._error(frame, exc.status, str(exc), exc.headers)
        except UploadError as exc:
            response = self._error(frame, exc.status, str(exc))
            response.close = exc.close
            return response
        except SearchUnavailableError as exc:
            return self._error(frame, 404, str(exc))
        except PipelineError as exc:  # damaged or missing artifacts: the server's side
            return self._error(frame, 500, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug must still answer, and be logged
            traceback.print_exc(file=sys.stderr)
            return self._error(frame, 500, f"internal error: {type(exc).__name__}: {exc}")

    def _dispatch(self, request: Request) -> Response:
        for pattern, methods in self.routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            allowed = sorted({*methods, *(["HEAD"] if "GET" in methods else [])})
            handler = methods.get("GET" if request.method == "HEAD" else request.method)
            if handler is None:
                raise HttpError(405, f"{request.method} is not allowed on {request.path}; use "
                                     f"{' or '.join(allowed)}", {"Allow": ", ".join(allowed)})
            return handler(request, *match.groups())
        raise HttpError(404, f"there is no page at {request.path}")

    def _error(self, frame: pages.Frame, status: int, message: str,
               headers: Mapping[str, str] | None = None) -> Response:
        reason = HTTPStatus(status).phrase
        return Response(status, pages.error_page(frame, status, reason, message).encode(), headers=dict(headers or {}))

    def _epoch_param(self, request: Request) -> int:
        """The ``epoch`` parameter, or the server's epoch when there is none."""
        epoch = _int_param(request, "epoch", self.default_epoch)
        assert epoch is not None
        return epoch

    def _epoch_of(self, request: Request) -> int:
        """The ``epoch`` parameter, which must name an epoch with a search index."""
        epoch = self._epoch_param(request)
        if epoch not in self.service.epochs():
            raise HttpError(404, self.service.unavailable(epoch))
        return epoch

    def _frame(self, epoch: int, path: str = "/") -> pages.Frame:
        return pages.Frame(self.service.experiment, epoch, self.service.epochs(), path)

    # -- views ----------------------------------------------------------------

    def index(self, request: Request) -> Response:
        epoch = self._epoch_of(request)
        searcher = self.service.searcher(epoch)
        html = pages.upload_page(self._frame(epoch), count=searcher.count, splits=searcher.meta["splits"],
                                 k=self.settings.k, max_mb=self.settings.max_upload_mb)
        return Response(200, html.encode())

    def search(self, request: Request) -> Response:
        epoch = self._epoch_of(request)
        body = read_body(request.body, request.headers, self.settings.max_upload_bytes)
        part = image_field(parse_multipart(body, request.headers.get("Content-Type", "")))
        name = part.filename or "upload"
        searcher = self.service.searcher(epoch)
        try:
            pixels = searcher.decode([part.data])
        except BadImageError as exc:
            raise HttpError(400, f"{name!r} is not an image this page can read; upload a JPEG, PNG or other "
                                 f"image file. (The decoder said: {exc})") from None
        hits = searcher.search_vectors(searcher.embed_pixels(pixels), self.settings.k)[0]
        try:
            preview = preview_png(part.data)
        except Exception:  # noqa: BLE001 - the preview is decoration; the search itself succeeded
            preview = None
        html = pages.results_page(self._frame(epoch), filename=name, preview=preview, seen=pixels_png(pixels[0]),
                                  hits=hits, max_mb=self.settings.max_upload_mb)
        return Response(200, html.encode())

    def image(self, request: Request, image_id: str) -> Response:
        epoch = self._epoch_of(request)
        searcher = self.service.searcher(epoch)
        try:
            image = searcher.describe(int(image_id))
        except ConfigError as exc:
            raise HttpError(404, str(exc)) from None
        hits = searcher.search_id(int(image_id), self.settings.k)
        return Response(200, pages.image_page(self._frame(epoch), image=image, hits=hits).encode())

    def queries(self, request: Request) -> Response:
        epoch = self._epoch_of(request)
        frame = self._frame(epoch, "/queries")
        table = load_queries(self.service.root, self.service.experiment, epoch)
        if table is None:
            missing = str(queries_file(self.service.root, self.service.experiment, epoch))
            html = pages.no_queries_page(frame, missing, validate_command(self.service.experiment, epoch))
            return Response(200, html.encode())
        limit = self.settings.page_size
        offset = min(_int_param(request, "offset", 0) or 0, max(len(table.rows) - 1, 0))
        searcher = self.service.searcher(epoch)
        html = pages.queries_page(frame, table.rows.iloc[offset:offset + limit], searcher.describe, k=table.k,
                                  total=len(table.rows), offset=offset, limit=limit, mean=table.mean)
        return Response(200, html.encode())

    def thumb(self, request: Request, epoch: str, image_id: str) -> Response:
        if int(epoch) not in self.service.epochs():
            raise HttpError(404, self.service.unavailable(int(epoch)))
        try:
            png = self.service.searcher(int(epoch)).thumbnail_png(int(image_id))
        except ConfigError as exc:
            raise HttpError(404, str(exc)) from None
        return Response(200, png, "image/png", {"Cache-Control": "max-age=3600"})

    def static(self, request: Request, name: str) -> Response:
        if name not in STATIC:
            raise HttpError(404, f"there is no file {name!r} here")
        return Response(200, (_STATIC_DIR / name).read_bytes(), STATIC[name], {"Cache-Control": "max-age=60"})
