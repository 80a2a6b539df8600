"""HTTP trigger camera client: fetch the frame a hardware trigger produced, by trigger id.

The camera (or `simulator.camera.SimulatedCamera`) exposes `GET /frames/{trigger_id}` as PNG or as
uncompressed BMP (the raw frame with a small header: decoding it costs ~0.1 ms against ~4 ms for
PNG, which matters inside the decision latency budget). The frame may appear a few ms after the
trigger, so `fetch` retries 404s and refused connections until its timeout. The peer is not
trusted: the response is parsed strictly with size caps, and the image header is checked before
decoding so a hostile image cannot make us allocate gigabytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
from urllib.parse import urlsplit

import cv2
import numpy as np

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_PIXELS = 4096 * 4096
RETRY_DELAYS_S = (0.002, 0.005, 0.01, 0.02)  # then stays at the last value

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: [\x20-\x7e\t]*)?")
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\x20-\x7e\t]*?)[ \t]*")


class CameraError(Exception):
    """Any failure to obtain a usable frame."""


class FrameNotAvailable(CameraError):
    """The camera answered, but had no frame for this trigger before the timeout."""


class CameraUnreachable(CameraError):
    """No answer from the camera before the timeout (refused, reset, or silent)."""


class BadFrame(CameraError):
    """The camera's answer was malformed, too large, undecodable or of the wrong size."""


class _Retry(Exception):
    """Internal: a transient condition worth another attempt before the deadline."""

    def __init__(self, final: CameraError) -> None:
        super().__init__(str(final))
        self.final = final


class HttpTriggerCamera:
    def __init__(
        self,
        base_url: str,
        timeout_s: float = 0.5,
        expected_size: tuple[int, int] | None = None,
    ) -> None:
        """`expected_size` is (width, height); when given, any other frame size is a BadFrame."""
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"camera URL must be http://host[:port], got {base_url!r}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path_prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.expected_size = expected_size
        # One receive buffer kept from the last decoded frame: a fresh multi-MB buffer per frame costs
        # several ms of page faults; a reused one is already mapped. Taken out while in use, so concurrent
        # fetches never share it (the others allocate their own).
        self._spare_buffer: bytearray | None = None

    async def fetch(self, trigger_id: int) -> np.ndarray:
        """The BGR uint8 frame for `trigger_id`, waiting up to `timeout_s` for it to appear."""
        if isinstance(trigger_id, bool) or not isinstance(trigger_id, int) or trigger_id < 0:
            raise ValueError(f"trigger_id must be a non-negative int, got {trigger_id!r}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        attempt = 0
        last: CameraError = CameraUnreachable("no attempt made")
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise last
            try:
                async with asyncio.timeout(remaining):
                    body = await self._get(f"{self.path_prefix}/frames/{trigger_id}")
            except _Retry as retry:
                last = retry.final
            except TimeoutError as exc:
                if isinstance(last, FrameNotAvailable):
                    # The camera did answer, with "no such frame yet": the deadline only cut a retry short.
                    raise last from exc
                raise CameraUnreachable(f"no complete answer within {self.timeout_s:.3f} s") from exc
            else:
                if _plain_bmp_layout(body) is not None:
                    frame = self._decode(body)  # a copy of the pixels (~0.2 ms): cheaper than a thread hop
                else:
                    frame = await asyncio.to_thread(self._decode, body)  # off the event loop: PNG decode costs ms
                self._spare_buffer = body  # the frame is a copy: nothing refers to the body any more
                return frame
            delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
            attempt += 1
            await asyncio.sleep(min(delay, max(deadline - loop.time(), 0.0)))

    async def _get(self, path: str) -> bytearray:
        loop = asyncio.get_running_loop()
        try:
            transport, receiver = await loop.create_connection(_ResponseReceiver, self.host, self.port)
        except OSError as exc:
            raise _Retry(CameraUnreachable(f"cannot connect to {self.host}:{self.port}: {exc}")) from exc
        try:
            request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nConnection: close\r\n\r\n"
            transport.write(request.encode("ascii"))
            status, headers = _parse_head(await receiver.head())
            if status == 404:
                raise _Retry(FrameNotAvailable(f"no frame for {path} before the timeout"))
            if status == 503:
                raise _Retry(FrameNotAvailable(f"camera busy for {path}"))
            if status != 200:
                raise BadFrame(f"camera answered HTTP {status} for {path}")
            length = _body_length(headers)
            spare, self._spare_buffer = self._spare_buffer, None
            return await receiver.body(length, spare if spare is not None and len(spare) == length else None)
        except ConnectionError as exc:
            raise _Retry(CameraUnreachable(f"connection lost: {exc}")) from exc
        finally:
            transport.close()
            with contextlib.suppress(ConnectionError, OSError):
                await receiver.closed

    def _decode(self, body: bytes | bytearray) -> np.ndarray:
        width, height = _image_size(body)
        if self.expected_size is not None and (width, height) != self.expected_size:
            raise BadFrame(f"frame is {width}x{height}, expected {self.expected_size[0]}x{self.expected_size[1]}")
        layout = _plain_bmp_layout(body)
        if layout is not None:
            return _bmp_pixels(body, *layout)
        try:
            frame = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        except cv2.error as exc:
            raise BadFrame(f"undecodable frame: {exc}") from exc
        if frame is None or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[:2] != (height, width):
            raise BadFrame("undecodable frame")
        return frame


class _ResponseReceiver(asyncio.BufferedProtocol):
    """One HTTP response, received by the transport straight into its final buffers.

    A BMP frame is ~2.7 MB: going through a StreamReader copies every byte twice on the event loop
    (into its buffer, then out by readexactly), several ms of CPU per frame on the decision path.
    Here the header lands in a fixed buffer of MAX_HEADER_BYTES, and once the caller has checked the
    header and named the body's length, the socket is read directly into one bytearray of that size.
    Reading pauses between the two, so nothing has to be queued while the header is checked.
    """

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._header = bytearray(MAX_HEADER_BYTES)
        self._header_filled = 0
        self._head_end = -1  # index just past the blank line ending the header, once seen
        self._body: bytearray | None = None
        self._body_filled = 0
        self._discard = bytearray(4096)  # bytes past Content-Length, or read after giving up
        self._eof = False
        self._failure: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = loop.create_future()

    # --- asyncio.BufferedProtocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._body is not None and self._body_filled < len(self._body):
            return memoryview(self._body)[self._body_filled:]
        if self._head_end < 0 and self._header_filled < MAX_HEADER_BYTES:
            return memoryview(self._header)[self._header_filled:]
        return memoryview(self._discard)

    def buffer_updated(self, nbytes: int) -> None:
        if self._body is not None and self._body_filled < len(self._body):
            self._body_filled += nbytes
            if self._body_filled == len(self._body):
                self._pause()
                self._wake()
        elif self._head_end < 0 and self._header_filled < MAX_HEADER_BYTES:
            # The blank line may straddle two reads: search from 3 bytes before the new data.
            search_from = max(0, self._header_filled - 3)
            self._header_filled += nbytes
            end = self._header.find(b"\r\n\r\n", search_from, self._header_filled)
            if end >= 0:
                self._head_end = end + 4
                self._pause()  # until the caller has checked the header and sized the body
                self._wake()
            elif self._header_filled >= MAX_HEADER_BYTES:
                self._fail(BadFrame(f"response header larger than {MAX_HEADER_BYTES} bytes"))

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._failure = self._failure or exc
        self._eof = True
        self._wake()
        if not self.closed.done():
            self.closed.set_result(None)

    # --- for the caller ---------------------------------------------------------------------------------

    async def head(self) -> bytes:
        """The response header up to and including its blank line."""
        while self._head_end < 0:
            self._raise_failure()
            if self._eof:
                raise BadFrame("connection closed inside the response header")
            await self._wait()
        return bytes(self._header[: self._head_end])

    async def body(self, length: int, into: bytearray | None = None) -> bytearray:
        """Exactly `length` body bytes, in `into` when given (of that length); whatever the server
        sends past them is ignored."""
        body = into if into is not None else bytearray(length)
        if len(body) != length:
            raise ValueError(f"receive buffer of {len(body)} bytes for a body of {length}")
        early = self._header[self._head_end : min(self._header_filled, self._head_end + length)]
        body[: len(early)] = early
        self._body, self._body_filled = body, len(early)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
        while self._body_filled < length:
            self._raise_failure()
            if self._eof:
                raise BadFrame(f"frame truncated at {self._body_filled} of {length} bytes")
            await self._wait()
        return body

    # --- plumbing ---------------------------------------------------------------------------------------

    def _pause(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def _fail(self, failure: BaseException) -> None:
        self._failure = failure
        if self._transport is not None:
            self._transport.close()
        self._wake()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


def _parse_head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    """Status code and lower-cased header names from a response header ending in its blank line."""
    if len(head) > MAX_HEADER_BYTES:
        raise BadFrame(f"response header larger than {MAX_HEADER_BYTES} bytes")
    lines = head[:-4].split(b"\r\n")
    status_match = _STATUS_LINE.fullmatch(lines[0])
    if status_match is None:
        raise BadFrame(f"malformed status line {lines[0][:80]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            raise BadFrame(f"malformed header line {line[:80]!r}")
        name, value = match.group(1).lower(), match.group(2)
        if name in headers and headers[name] != value:
            # Conflicting duplicates (e.g. two Content-Lengths) are a classic smuggling trick.
            raise BadFrame(f"conflicting {name.decode()} headers")
        headers[name] = value
    return int(status_match.group(1)), headers


def _body_length(headers: dict[bytes, bytes]) -> int:
    """The frame's length in bytes, once the headers show a body this driver accepts."""
    if b"transfer-encoding" in headers:
        raise BadFrame("chunked or encoded bodies are not supported")
    raw_length = headers.get(b"content-length")
    if raw_length is None or not raw_length.isdigit() or len(raw_length) > 10:
        raise BadFrame("missing or invalid Content-Length")
    length = int(raw_length)
    if length > MAX_BODY_BYTES:
        raise BadFrame(f"frame of {length} bytes exceeds the {MAX_BODY_BYTES} byte cap")
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if content_type not in (b"image/png", b"image/bmp"):
        raise BadFrame(f"unexpected content type {content_type[:40]!r}")
    return length


def _image_size(body: bytes | bytearray) -> tuple[int, int]:
    """(width, height) from the PNG or BMP header, checked before any pixel memory is allocated."""
    if body.startswith(b"BM"):
        return _bmp_size(body)
    if len(body) < 33 or not body.startswith(_PNG_SIGNATURE) or body[12:16] != b"IHDR":
        raise BadFrame("not a PNG or BMP image")
    width, height = struct.unpack(">II", body[16:24])
    return _plausible(width, height)


def _bmp_size(body: bytes | bytearray) -> tuple[int, int]:
    # BITMAPFILEHEADER (14 bytes) then BITMAPINFOHEADER: width and height are signed (a negative
    # height means top-down rows); only uncompressed 24/32-bit frames are accepted.
    if len(body) < 54:
        raise BadFrame("BMP header truncated")
    header_size, width, height, planes, bits, compression = struct.unpack("<IiiHHI", body[14:34])
    if header_size < 40 or planes != 1 or bits not in (24, 32) or compression not in (0, 3):
        raise BadFrame("unsupported BMP layout")
    width, height = abs(width), abs(height)
    _plausible(width, height)
    row = (width * bits // 8 + 3) // 4 * 4
    if len(body) < 54 + row * height:
        raise BadFrame("BMP pixel data truncated")
    return width, height


def _plain_bmp_layout(body: bytes | bytearray) -> tuple[int, int, int] | None:
    """(pixel offset, width, signed height) of an uncompressed 24-bit BMP whose pixels all lie
    inside `body` and whose size is plausible, else None (cv2 then decodes, or refuses, it)."""
    if len(body) < 54 or not body.startswith(b"BM"):
        return None
    pixel_offset = struct.unpack_from("<I", body, 10)[0]
    header_size, width, height, planes, bits, compression = struct.unpack_from("<IiiHHI", body, 14)
    if header_size < 40 or planes != 1 or bits != 24 or compression != 0 or pixel_offset < 14 + header_size:
        return None
    if width <= 0 or height == 0 or width * abs(height) > MAX_PIXELS:
        return None
    row = (width * 3 + 3) // 4 * 4
    if pixel_offset + row * abs(height) > len(body):
        return None
    return pixel_offset, width, height


def _bmp_pixels(body: bytes | bytearray, pixel_offset: int, width: int, height: int) -> np.ndarray:
    """The BGR frame of a plain 24-bit BMP, as cv2.imdecode would give it, in one copy: the pixel
    rows are already BGR, padded to 4 bytes, and stored bottom-up unless the height is negative."""
    rows, row = abs(height), (width * 3 + 3) // 4 * 4
    stored = np.frombuffer(body, np.uint8, count=row * rows, offset=pixel_offset).reshape(rows, row)
    pixels = stored[:, : width * 3].reshape(rows, width, 3)
    return (pixels[::-1] if height > 0 else pixels).copy()


def _plausible(width: int, height: int) -> tuple[int, int]:
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        raise BadFrame(f"implausible frame size {width}x{height}")
    return width, height
