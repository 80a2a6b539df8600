"""HTTP trigger camera client: fetch the frame a hardware trigger produced, by trigger id.

The camera (or `simulator.camera.SimulatedCamera`) exposes `GET /frames/{trigger_id}` as PNG or as
uncompressed BMP (the raw frame with a small header: decoding it costs ~0.1 ms against ~4 ms for
PNG, which matters inside the decision latency budget). The frame may appear a few ms after the
trigger, so `fetch` retries 404s and refused connections until its timeout. The peer is not
trusted: the response is parsed strictly with size caps, and the image header is checked before
decoding so a hostile image cannot make us allocate gigabytes.

Each attempt runs on a small thread pool of its own, not on the event loop: a 1280x720 BMP is
~2.7 MB, and the kernel copying it into our buffer plus one pass over the pixels took 2-3 ms of
event-loop CPU per unit. On a worker thread the socket reads release the GIL, so the loop only
pays for handing the attempt over and picking up the frame. A top-down BMP (negative height) with
unpadded rows is returned as a view on the receive buffer, with no copy at all.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol
from urllib.parse import urlsplit

import cv2
import numpy as np

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_PIXELS = 4096 * 4096
RETRY_DELAYS_S = (0.002, 0.005, 0.01, 0.02)  # then stays at the last value
# Concurrent attempts across all cameras of the process; more wait for a free thread, still bounded
# by their own deadline. As many as units may be in flight by default (vision.max_units_in_flight),
# so a slow or silent camera holding threads until its timeout does not starve the others' fetches.
# Threads are only started when needed.
RECEIVE_THREADS = 16

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: [\x20-\x7e\t]*)?")
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\x20-\x7e\t]*?)[ \t]*")

Buffer = bytes | bytearray | np.ndarray  # a 1-D uint8 array for np.ndarray

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _receive_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=RECEIVE_THREADS, thread_name_prefix="camera-receive")
        return _executor


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
        """The BGR uint8 frame for `trigger_id`, waiting up to `timeout_s` for it to appear.

        The frame is C-contiguous, writeable and owned by the caller alone: no later fetch reuses
        its memory."""
        if isinstance(trigger_id, bool) or not isinstance(trigger_id, int) or trigger_id < 0:
            raise ValueError(f"trigger_id must be a non-negative int, got {trigger_id!r}")
        loop = asyncio.get_running_loop()
        # loop.time() is time.monotonic(), the clock the receiving thread checks the deadline on.
        deadline = loop.time() + self.timeout_s
        path = f"{self.path_prefix}/frames/{trigger_id}"
        executor = _receive_executor()
        attempt = 0
        last: CameraError = CameraUnreachable("no attempt made")
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise last
            try:
                # The thread keeps to the same deadline; the timeout here also covers waiting for a
                # free thread. An abandoned attempt ends by itself at the deadline, at the latest.
                async with asyncio.timeout(remaining):
                    return await loop.run_in_executor(executor, self._attempt, path, deadline)
            except _Retry as retry:
                last = retry.final
            except TimeoutError as exc:
                if isinstance(last, FrameNotAvailable):
                    # The camera did answer, with "no such frame yet": the deadline only cut a retry short.
                    raise last from exc
                raise CameraUnreachable(f"no complete answer within {self.timeout_s:.3f} s") from exc
            delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
            attempt += 1
            await asyncio.sleep(min(delay, max(deadline - loop.time(), 0.0)))

    def _attempt(self, path: str, deadline: float) -> np.ndarray:
        """One GET and the decoded frame, on a receive thread; blocking, but never past `deadline`."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed before the attempt started")
        try:
            sock = socket.create_connection((self.host, self.port), timeout=remaining)
        except TimeoutError:
            raise
        except OSError as exc:
            raise _Retry(CameraUnreachable(f"cannot connect to {self.host}:{self.port}: {exc}")) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nConnection: close\r\n\r\n"
            receiver = _DeadlineSocket(sock, deadline)
            receiver.sendall(request.encode("ascii"))
            header = bytearray(MAX_HEADER_BYTES)
            head_end, filled = _read_head(receiver, header)
            status, headers = _parse_head(bytes(header[:head_end]))
            if status == 404:
                raise _Retry(FrameNotAvailable(f"no frame for {path} before the timeout"))
            if status == 503:
                raise _Retry(FrameNotAvailable(f"camera busy for {path}"))
            if status != 200:
                raise BadFrame(f"camera answered HTTP {status} for {path}")
            body = _read_body(receiver, memoryview(header)[head_end:filled], _body_length(headers))
        except TimeoutError:
            raise
        except OSError as exc:  # reset, broken pipe, ...: the camera may be restarting
            raise _Retry(CameraUnreachable(f"connection lost: {exc}")) from exc
        finally:
            sock.close()
        return self._decode(body)

    def _decode(self, body: np.ndarray) -> np.ndarray:
        width, height = _image_size(body)
        if self.expected_size is not None and (width, height) != self.expected_size:
            raise BadFrame(f"frame is {width}x{height}, expected {self.expected_size[0]}x{self.expected_size[1]}")
        layout = _plain_bmp_layout(body)
        if layout is not None:
            return _bmp_pixels(body, *layout)
        try:
            frame = cv2.imdecode(body, cv2.IMREAD_COLOR)
        except cv2.error as exc:
            raise BadFrame(f"undecodable frame: {exc}") from exc
        if frame is None or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[:2] != (height, width):
            raise BadFrame("undecodable frame")
        return frame


class _Receiver(Protocol):
    def recv_into(self, buffer: memoryview) -> int: ...


class _DeadlineSocket:
    """A blocking socket whose every wait ends at one overall deadline: a peer trickling a byte at a
    time cannot hold a receive thread past it."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def _arm(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("camera deadline passed")
        self._sock.settimeout(remaining)

    def sendall(self, data: bytes) -> None:
        self._arm()
        self._sock.sendall(data)

    def recv_into(self, buffer: memoryview) -> int:
        self._arm()
        return self._sock.recv_into(buffer)




def _read_head(receiver: _Receiver, header: bytearray) -> tuple[int, int]:
    """Reads the response header into `header` (MAX_HEADER_BYTES long); returns the index just past
    its blank line and how many bytes were read (the rest is the body's start)."""
    filled = 0
    view = memoryview(header)
    while True:
        received = receiver.recv_into(view[filled:])
        if received == 0:
            raise BadFrame("connection closed inside the response header")
        # The blank line may straddle two reads: search from 3 bytes before the new data.
        search_from = max(0, filled - 3)
        filled += received
        end = header.find(b"\r\n\r\n", search_from, filled)
        if end >= 0:
            return end + 4, filled
        if filled >= len(header):
            raise BadFrame(f"response header larger than {MAX_HEADER_BYTES} bytes")


def _read_body(receiver: _Receiver, early: memoryview, length: int) -> np.ndarray:
    """Exactly `length` body bytes, received straight into one new array (no chunks to join; the
    frame returned for a plain BMP is a view on it). Bytes the server sends past them are ignored."""
    # np.empty, not bytearray(length): no zero-filling pass over memory the socket overwrites.
    body = np.empty(length, np.uint8)
    view = memoryview(body)
    filled = min(len(early), length)
    view[:filled] = early[:filled]
    while filled < length:
        received = receiver.recv_into(view[filled:])
        if received == 0:
            raise BadFrame(f"frame truncated at {filled} of {length} bytes")
        filled += received
    return body


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


def _prefix(body: Buffer, size: int) -> bytes:
    return bytes(memoryview(body)[:size])


def _image_size(body: Buffer) -> tuple[int, int]:
    """(width, height) from the PNG or BMP header, checked before any pixel memory is allocated."""
    start = _prefix(body, 33)
    if start.startswith(b"BM"):
        return _bmp_size(body)
    if len(start) < 33 or not start.startswith(_PNG_SIGNATURE) or start[12:16] != b"IHDR":
        raise BadFrame("not a PNG or BMP image")
    width, height = struct.unpack(">II", start[16:24])
    return _plausible(width, height)


def _bmp_size(body: Buffer) -> tuple[int, int]:
    # BITMAPFILEHEADER (14 bytes) then BITMAPINFOHEADER: width and height are signed (a negative
    # height means top-down rows); only uncompressed 24/32-bit frames are accepted.
    if len(body) < 54:
        raise BadFrame("BMP header truncated")
    header_size, width, height, planes, bits, compression = struct.unpack_from("<IiiHHI", body, 14)
    if header_size < 40 or planes != 1 or bits not in (24, 32) or compression not in (0, 3):
        raise BadFrame("unsupported BMP layout")
    width, height = abs(width), abs(height)
    _plausible(width, height)
    row = (width * bits // 8 + 3) // 4 * 4
    if len(body) < 54 + row * height:
        raise BadFrame("BMP pixel data truncated")
    return width, height


def _plain_bmp_layout(body: Buffer) -> tuple[int, int, int] | None:
    """(pixel offset, width, signed height) of an uncompressed 24-bit BMP whose pixels all lie
    inside `body` and whose size is plausible, else None (cv2 then decodes, or refuses, it)."""
    if len(body) < 54 or _prefix(body, 2) != b"BM":
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


def _bmp_pixels(body: Buffer, pixel_offset: int, width: int, height: int) -> np.ndarray:
    """The BGR frame of a plain 24-bit BMP, as cv2.imdecode would give it: the pixel rows are
    already BGR, padded to 4 bytes, and stored bottom-up unless the height is negative.

    Top-down rows without padding (a 1280 px wide frame from the simulated camera) are already the
    C-contiguous frame: that is returned as a view on `body`, no copy. Anything else costs one copy,
    the flip of bottom-up rows included."""
    rows, row = abs(height), (width * 3 + 3) // 4 * 4
    stored = np.frombuffer(body, np.uint8, count=row * rows, offset=pixel_offset).reshape(rows, row)
    pixels = stored[:, : width * 3].reshape(rows, width, 3)
    if height < 0 and pixels.flags.c_contiguous and pixels.flags.writeable:
        return pixels
    return (pixels[::-1] if height > 0 else pixels).copy()


def _plausible(width: int, height: int) -> tuple[int, int]:
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        raise BadFrame(f"implausible frame size {width}x{height}")
    return width, height
