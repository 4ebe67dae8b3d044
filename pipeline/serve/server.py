"""The search page on the standard library's threaded HTTP server: each request
goes to :meth:`SearchApp.handle`, and the answer gets the security headers.

A server bound to the loopback address answers only requests addressed to
``localhost`` or a loopback IP, so a web page elsewhere cannot reach it through
a DNS name it controls (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO

from pipeline.errors import ConfigError
from pipeline.serve import pages
from pipeline.serve.app import SECURITY_HEADERS, Response, SearchApp

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class _CountingReader:
    """The request body stream, counting what the handler read of it."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.consumed = stream, 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.consumed += len(data)
        return data


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """``Host`` header -> host name without the port (``[::1]:80`` -> ``::1``)."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def handler_class(app: SearchApp, *, loopback_only: bool) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``app``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a results page loads a dozen thumbnails
        server_version = "pipeline.serve"
        # Seconds a connection may sit silent (mid-upload or idle between keep-alive
        # requests) before its thread gives up on it.
        timeout = 60

        def _answer(self) -> None:
            body = _CountingReader(self.rfile)
            host = host_name(self.headers.get("Host", "localhost")).lower()
            if loopback_only and host not in LOOPBACK_NAMES and not is_loopback(host):
                frame = pages.Frame(app.service.experiment, None, [])
                response = Response(421, pages.error_page(frame, 421, "Misdirected Request", (
                    f"this server answers only to localhost, not to the host name {host!r}")).encode(), close=True)
            else:
                response = app.handle(self.command, self.path, self.headers, body)
            expected = self.headers.get("Content-Length", "0")
            if response.close or not expected.isdigit() or body.consumed < int(expected):
                # An unread body would be taken for the next request on this connection.
                response.close = True
            self._send(response)

        def _send(self, response: Response) -> None:
            self.send_response(response.status)
            headers = {"Content-Type": response.content_type, "Content-Length": str(len(response.body)),
                       **SECURITY_HEADERS, **response.headers}
            headers.setdefault("Cache-Control", "no-store")
            if response.close:
                headers["Connection"] = "close"
                self.close_connection = True
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _answer

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # open keep-alive connections do not hold up a shutdown


def make_server(app: SearchApp, host: str, port: int) -> ThreadingHTTPServer:
    """A server listening on ``host:port`` (port 0: any free one); not yet serving.

    Raises :class:`ConfigError` naming the address when it cannot listen there.
    """
    handler = handler_class(app, loopback_only=is_loopback(host))
    cls = _Server
    if ":" in host:  # an IPv6 address
        cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
    try:
        return cls((host, port), handler)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
                          "(0 picks a free one) or --host") from None


def server_url(server: ThreadingHTTPServer) -> str:
    """``http://HOST:PORT/`` of a listening server."""
    host, port = server.server_address[:2]
    return f"http://[{host}]:{port}/" if ":" in str(host) else f"http://{host}:{port}/"
