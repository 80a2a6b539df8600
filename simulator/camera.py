"""Simulated hardware-triggered camera: renders a frame per trigger and serves it over HTTP.

The line simulator calls `capture(trigger_id, appearance)` when the scan photo-eye trips (wrap it
in a task if the caller must not wait for the render). Frames are kept by trigger id for the last
`keep` triggers and served as BMP (or PNG) at `GET /frames/{trigger_id}`; `GET /health` answers JSON.
Minimal HTTP/1.1: one request per connection, `Connection: close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections import OrderedDict
from types import TracebackType

import cv2
import numpy as np

from simulator.render import FRAME_SIZE, Appearance, render_frame

MAX_REQUEST_HEAD = 8 * 1024
REQUEST_TIMEOUT_S = 5.0


def top_down_bmp(frame: np.ndarray) -> bytes:
    """An uncompressed 24-bit BMP of a BGR uint8 frame, rows stored top row first.

    Like the raw frames of an industrial camera: sensor noise defeats compression anyway, and BMP
    costs ~0.2 ms to encode and ~0.1 ms to decode (PNG: ~20 and ~4). Top-down (the negative height
    of the BITMAPINFOHEADER), unlike cv2.imencode's bottom-up rows, lets the client use the pixels
    where they land, without flipping them into a new array.
    """
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError("frame must be a (height, width, 3) uint8 array")
    height, width = frame.shape[:2]
    row = (width * 3 + 3) // 4 * 4  # rows are padded to 4 bytes
    pixel_bytes = row * height
    header = struct.pack(
        "<2sIHHIIiiHHIIiiII",
        b"BM", 54 + pixel_bytes, 0, 0, 54,  # BITMAPFILEHEADER: pixels right after the two headers
        40, width, -height, 1, 24, 0, pixel_bytes, 2835, 2835, 0, 0,  # BITMAPINFOHEADER, 72 dpi
    )
    if row == width * 3:
        return header + np.ascontiguousarray(frame).tobytes()
    padded = np.zeros((height, row), np.uint8)
    padded[:, : width * 3] = frame.reshape(height, width * 3)
    return header + padded.tobytes()


class SimulatedCamera:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        px_per_mm: float = 3.0,
        seed: int = 0,
        keep: int = 64,
        size: tuple[int, int] = FRAME_SIZE,
        image_format: str = ".bmp",
    ) -> None:
        if image_format not in (".bmp", ".png"):
            raise ValueError("image_format must be .bmp or .png")
        self.image_format = image_format
        self.host = host
        self.port = port
        self.px_per_mm = px_per_mm
        self.size = size
        self.keep = keep
        self._seed = seed
        self._frames: OrderedDict[int, bytes] = OrderedDict()
        self._prepared: dict[int, asyncio.Future[tuple[np.ndarray, bytes]]] = {}
        self._server: asyncio.Server | None = None
        self.captures = 0
        self.requests = 0
        self.url = ""

    async def __aenter__(self) -> SimulatedCamera:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_REQUEST_HEAD)
        sock_host, sock_port = self._server.sockets[0].getsockname()[:2]
        self.port = sock_port
        self.url = f"http://{sock_host}:{sock_port}"

    async def stop(self) -> None:
        for pending in self._prepared.values():
            pending.cancel()
        self._prepared.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def prepare(self, unit_key: int, appearance: Appearance) -> None:
        """Start rendering a unit's frame while it is still on its way to the camera.

        A real camera exposes and transfers a frame in a few milliseconds; rendering and encoding
        here take far longer, and that cost must not show up as controller latency.
        """
        rng = np.random.default_rng([self._seed, 1_000_000 + unit_key])
        self._prepared[unit_key] = asyncio.ensure_future(asyncio.to_thread(self._render_png, appearance, rng))

    async def wait_prepared(self) -> None:
        """Until every frame prepared so far is rendered."""
        await asyncio.gather(*self._prepared.values())

    async def capture(self, trigger_id: int, appearance: Appearance, unit_key: int | None = None) -> np.ndarray:
        """Store the frame for this trigger (prepared earlier, or rendered now); returns the BGR frame."""
        prepared = self._prepared.pop(unit_key, None) if unit_key is not None else None
        if prepared is not None:
            frame, png = await prepared
        else:
            # Each trigger gets its own generator so a frame depends only on (seed, trigger id), not
            # on the order in which concurrent captures finish.
            rng = np.random.default_rng([self._seed, trigger_id])
            frame, png = await asyncio.to_thread(self._render_png, appearance, rng)
        self._frames[trigger_id] = png
        self._frames.move_to_end(trigger_id)
        while len(self._frames) > self.keep:
            self._frames.popitem(last=False)
        self.captures += 1
        return frame

    def _render_png(self, appearance: Appearance, rng: np.random.Generator) -> tuple[np.ndarray, bytes]:
        frame = render_frame(appearance, rng, px_per_mm=self.px_per_mm, size=self.size)
        if self.image_format == ".bmp":
            return frame, top_down_bmp(frame)
        ok, encoded = cv2.imencode(".png", frame, [cv2.IMWRITE_PNG_COMPRESSION, 0])
        if not ok:
            raise RuntimeError("frame encoding failed")
        return frame, encoded.tobytes()

    def has_frame(self, trigger_id: int) -> bool:
        return trigger_id in self._frames

    # -- HTTP ---------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = self._route(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError):
            status, content_type, body = 400, "text/plain", b"bad request\n"
        except ConnectionError:
            writer.close()
            return
        self.requests += 1
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}[status]
        header = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        with contextlib.suppress(ConnectionError):
            writer.write(header + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    def _route(self, head: bytes) -> tuple[int, str, bytes]:
        request_line = head.split(b"\r\n", 1)[0].decode("ascii")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise ValueError("malformed request line")
        method, target, _ = parts
        if method != "GET":
            return 405, "text/plain", b"method not allowed\n"
        if target == "/health":
            body = json.dumps({"status": "ok", "frames": len(self._frames), "captures": self.captures})
            return 200, "application/json", body.encode()
        prefix = "/frames/"
        if target.startswith(prefix):
            text = target[len(prefix) :]
            if text.isdigit() and len(text) <= 10:
                png = self._frames.get(int(text))
                if png is not None:
                    return 200, "image/png" if self.image_format == ".png" else "image/bmp", png
        return 404, "text/plain", b"not found\n"
