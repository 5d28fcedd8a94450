"""HTTP compression, both ways (docs/http.md, "Compression").

Answers: JSON answers of at least COMPRESS_MIN_BYTES are gzipped for a client that sends
`Accept-Encoding: gzip` (Flask-Compress). Smaller ones are not: there gzip costs more than it
saves. Every answer says `Vary: Accept-Encoding`, so a cache never hands a gzipped answer to a
client that did not ask for one. A held long poll is unaffected: its answer is built, and
compressed, only once it is ready. Streamed answers (the page's static files) go out as they
are: compressing a stream would buffer it.

Requests: a body sent with `Content-Encoding: gzip` is decompressed as the view reads it, and
the size limit (MAX_CONTENT_LENGTH) applies to the decompressed body, so a small zip bomb is
refused with 413 after at most MAX_CONTENT_LENGTH + 1 decompressed bytes. A corrupt or cut-off
gzip body is 400; any other content coding is 415.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from typing import IO

from flask import Flask, Response, current_app, request
from flask_compress import Compress
from werkzeug.wsgi import get_input_stream

from duely import errors

COMPRESS_MIN_BYTES = 1024
_READ_BYTES = 16384
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer, not raw deflate or zlib


class UnsupportedContentEncoding(errors.DuelyError):
    code = "unsupported_encoding"
    status = 415
    message = "Send the body uncompressed or with Content-Encoding: gzip."


class CorruptGzipBody(errors.BadRequest):
    message = "The body is not valid gzip (Content-Encoding: gzip)."


class GunzipReader(io.RawIOBase):
    """The decompressed body of a gzip stream, produced only as it is read, never more than
    `limit` bytes: reading past the limit raises PayloadTooLarge having decompressed at most
    limit + 1 bytes. Several gzip members in a row are one body (RFC 1952)."""

    def __init__(self, raw: IO[bytes], limit: int):
        super().__init__()
        self._raw = raw
        self._limit = limit
        self._produced = 0
        self._inflater = zlib.decompressobj(_GZIP_WBITS)
        self._pending = b""  # compressed bytes read but not yet decompressed
        self._member_started = False
        self._raw_done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self._limit + 1 - self._produced)
        if want <= 0:
            raise _too_large()
        while True:
            if self._inflater.eof:
                if not self._next_member():
                    return 0
            if not self._pending and not self._raw_done:
                self._pending = self._raw.read(_READ_BYTES) or b""
                self._raw_done = not self._pending
            if not self._pending:
                if self._member_started:
                    raise CorruptGzipBody("The gzip body is cut off before its end.")
                return 0
            self._member_started = True
            try:
                out = self._inflater.decompress(self._pending, want)
            except zlib.error as exc:
                raise CorruptGzipBody() from exc
            self._pending = self._inflater.unconsumed_tail
            if out:
                self._produced += len(out)
                if self._produced > self._limit:
                    raise _too_large()
                buffer[: len(out)] = out
                return len(out)

    def _next_member(self) -> bool:
        """After a member's end: start the next one, or report the end of the body."""
        rest = self._inflater.unused_data
        while len(rest) < len(_GZIP_MAGIC) and not self._raw_done:
            more = self._raw.read(_READ_BYTES) or b""
            self._raw_done = not more
            rest += more
        if not rest:
            return False
        if not rest.startswith(_GZIP_MAGIC):
            raise CorruptGzipBody("Unexpected data after the gzip body.")
        self._inflater = zlib.decompressobj(_GZIP_WBITS)
        self._pending = rest
        self._member_started = False
        return True


def _too_large() -> errors.PayloadTooLarge:
    return errors.PayloadTooLarge("The request body is too large once decompressed.")


def _content_codings() -> list[str]:
    value = request.headers.get("Content-Encoding", "")
    return [c for c in (part.strip().lower() for part in value.split(",")) if c and c != "identity"]


def decode_request_body() -> None:
    """before_request: give the view the decompressed body of a gzip request."""
    codings = _content_codings()
    if not codings:
        return
    if codings not in (["gzip"], ["x-gzip"]):
        raise UnsupportedContentEncoding()
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    # The compressed body is bounded too (413 at once by its Content-Length, or when a chunked
    # one runs past): gzip can make incompressible data a little larger, never much.
    raw = get_input_stream(request.environ, max_content_length=limit + limit // 64 + 1024)
    # `stream` is what get_data, get_json and webargs read; nothing has read it yet (before_request).
    request.stream = io.BufferedReader(GunzipReader(raw, limit))


def init_app(app: Flask) -> None:
    app.config.update(
        COMPRESS_ALGORITHM=["gzip"],  # what every HTTP client decodes
        COMPRESS_LEVEL=6,
        COMPRESS_MIN_SIZE=COMPRESS_MIN_BYTES,
        COMPRESS_MIMETYPES=["application/json"],
        COMPRESS_STREAMS=False,
    )
    compress = Compress(app)
    # Flask-Compress weighs every answer (Accept-Encoding parsed, algorithm chosen, mimetype
    # looked up); an answer under the threshold, nearly every one, only needs its Vary header.
    funcs = app.after_request_funcs[None]
    funcs[funcs.index(compress.after_request)] = _small_answers_first(compress.after_request)
    app.before_request(decode_request_body)


def _small_answers_first(compress_answer: Callable[[Response], Response]) -> Callable[[Response], Response]:
    def after_request(response: Response) -> Response:
        length = response.content_length
        if length is None or length >= COMPRESS_MIN_BYTES or response.is_streamed:
            return compress_answer(response)
        vary = response.headers.get("Vary")  # as Flask-Compress writes it
        if not vary:
            response.headers["Vary"] = "Accept-Encoding"
        elif "accept-encoding" not in vary.lower():
            response.headers["Vary"] = f"{vary}, Accept-Encoding"
        return response

    return after_request
