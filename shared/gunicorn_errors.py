"""How modelgate's gunicorn workers answer HTTP protocol errors: problem+json with an id, like every response.

gunicorn itself refuses what it cannot parse (a bad request line, too many or too long headers, a broken
chunked body before the application reads it...) and answers with an HTML page and no ``X-Request-ID``;
it also logs the offending request line, which may carry a token in its query string. These workers keep
gunicorn's parser and its choice of status, and change only the answer and the log line: the contract's
problem+json body with a request id, and a warning that names the error class, never the request's text.
Errors that are not the client's (an application that sends a bad header) are a 500 in the same form,
logged with their traceback and the path without its query string.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import orjson
from gunicorn.http import errors as http_errors
from gunicorn.util import write_nonblock

from shared.errors import problem
from shared.logging import new_request_id, request_id_var

log = logging.getLogger("modelgate.access")

#: gunicorn's parse errors that are the client's, with the status gunicorn gives them (400 if not listed).
_STATUS = {
    "LimitRequestLine": (414, "URI Too Long", "the request line is too long"),
    "LimitRequestHeaders": (431, "Request Header Fields Too Large", "too many request headers, or one too long"),
    "ExpectationFailed": (417, "Expectation Failed", "the Expect header asks for something this server does not do"),
    "UnsupportedTransferCoding": (501, "Not Implemented", "the Transfer-Encoding is not supported"),
    "ForbiddenProxyRequest": (403, "Forbidden", "request forbidden"),
}
_CLIENT_ERRORS = tuple(
    getattr(http_errors, name)
    for name in (
        "InvalidRequestLine",
        "InvalidRequestMethod",
        "InvalidHTTPVersion",
        "InvalidHeader",
        "InvalidHeaderName",
        "LimitRequestLine",
        "LimitRequestHeaders",
        "InvalidProxyLine",
        "ForbiddenProxyRequest",
        "InvalidSchemeHeaders",
        "UnsupportedTransferCoding",
        "ObsoleteFolding",
        "ExpectationFailed",
        "InvalidH2CPreface",
        "InvalidChunkSize",
        "ChunkMissingTerminator",
        "InvalidChunkExtension",
    )
    if hasattr(http_errors, name)
)
_SLUGS = {400: "bad-request", 403: "forbidden", 414: "uri-too-long", 417: "expectation-failed"}
_SLUGS.update({431: "request-header-fields-too-large", 500: "internal-error", 501: "not-implemented"})


#: Raised when the application sends a bad header: gunicorn's subclasses of two client errors, but the
#: server's fault (gunicorn answers them 500 too).
_SERVER_ERRORS = tuple(
    getattr(http_errors, name)
    for name in ("InvalidResponseHeader", "InvalidResponseHeaderName")
    if hasattr(http_errors, name)
)


def problem_response(exc: BaseException) -> tuple[int, bytes, str]:
    """The raw HTTP answer to an error gunicorn caught, and its request id: the client's, or else a 500."""
    if isinstance(exc, _CLIENT_ERRORS) and not isinstance(exc, _SERVER_ERRORS):
        status, title, detail = _STATUS.get(
            type(exc).__name__,
            (400, "Bad Request", "the request is not valid HTTP/1.1 (request line, headers or body framing)"),
        )
    else:
        status, title, detail = 500, "Internal Server Error", "internal error"
    request_id = new_request_id()
    token = request_id_var.set(request_id)
    try:
        body = orjson.dumps(problem(status, title, detail, _SLUGS[status]))
    finally:
        request_id_var.reset(token)
    head = (
        f"HTTP/1.1 {status} {title}\r\nContent-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\nConnection: close\r\n\r\n"
    )
    return status, head.encode("latin-1") + body, request_id


class ProblemErrors:
    """Mixin over a gunicorn worker: errors gunicorn answers itself become problem+json, logged without text."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        status, raw, request_id = problem_response(exc)
        ip = (addr or ("", -1))[0]
        # Never the exception's text nor the URI: gunicorn puts the request line in the first, and the query
        # string of either may carry a token. The path alone, without its query, when gunicorn parsed one.
        fields = {"status": status, "error": type(exc).__name__, "client_ip": ip}
        if getattr(req, "path", None):
            fields.update(method=str(req.method)[:16], path=str(req.path)[:200])
        token = request_id_var.set(request_id)
        try:
            if status >= 500:
                log.error("error handling request", extra=fields, exc_info=exc)
            else:
                log.warning("invalid request", extra=fields)
        finally:
            request_id_var.reset(token)
        with contextlib.suppress(OSError):  # the client is gone: nobody to answer
            write_nonblock(client, raw)
