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
                raise CameraUnreachable(f"no complete answer within {self.timeout_s:.3f} s") from exc
            else:
                return await asyncio.to_thread(self._decode, body)  # off the event loop: PNG decode costs ms
            delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
            attempt += 1
            await asyncio.sleep(min(delay, max(deadline - loop.time(), 0.0)))

    async def _get(self, path: str) -> bytes:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEADER_BYTES)
        except OSError as exc:
            raise _Retry(CameraUnreachable(f"cannot connect to {self.host}:{self.port}: {exc}")) from exc
        try:
            request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nConnection: close\r\n\r\n"
            writer.write(request.encode("ascii"))
            await writer.drain()
            status, headers = await _read_head(reader)
            if status == 404:
                raise _Retry(FrameNotAvailable(f"no frame for {path} before the timeout"))
            if status == 503:
                raise _Retry(FrameNotAvailable(f"camera busy for {path}"))
            if status != 200:
                raise BadFrame(f"camera answered HTTP {status} for {path}")
            return await _read_body(reader, headers)
        except ConnectionError as exc:
            raise _Retry(CameraUnreachable(f"connection lost: {exc}")) from exc
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def _decode(self, body: bytes) -> np.ndarray:
        width, height = _image_size(body)
        if self.expected_size is not None and (width, height) != self.expected_size:
            raise BadFrame(f"frame is {width}x{height}, expected {self.expected_size[0]}x{self.expected_size[1]}")
        try:
            frame = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        except cv2.error as exc:
            raise BadFrame(f"undecodable frame: {exc}") from exc
        if frame is None or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[:2] != (height, width):
            raise BadFrame("undecodable frame")
        return frame


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise BadFrame(f"response header larger than {MAX_HEADER_BYTES} bytes") from exc
    except asyncio.IncompleteReadError as exc:
        raise BadFrame("connection closed inside the response header") from exc
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


async def _read_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> bytes:
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
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise BadFrame(f"frame truncated at {len(exc.partial)} of {length} bytes") from exc


def _image_size(body: bytes) -> tuple[int, int]:
    """(width, height) from the PNG or BMP header, checked before any pixel memory is allocated."""
    if body.startswith(b"BM"):
        return _bmp_size(body)
    if len(body) < 33 or not body.startswith(_PNG_SIGNATURE) or body[12:16] != b"IHDR":
        raise BadFrame("not a PNG or BMP image")
    width, height = struct.unpack(">II", body[16:24])
    return _plausible(width, height)


def _bmp_size(body: bytes) -> tuple[int, int]:
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


def _plausible(width: int, height: int) -> tuple[int, int]:
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        raise BadFrame(f"implausible frame size {width}x{height}")
    return width, height
