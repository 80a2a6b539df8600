"""Real HTTP over loopback between the simulated camera and the trigger-camera driver."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.camera import (
    MAX_HEADER_BYTES,
    BadFrame,
    CameraError,
    CameraUnreachable,
    FrameNotAvailable,
    HttpTriggerCamera,
    _bmp_pixels,
    _bmp_size,
    _image_size,
    _parse_head,
    _plain_bmp_layout,
    _read_body,
    _read_head,
)
from simulator.camera import SimulatedCamera, top_down_bmp
from simulator.render import generate_appearance

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _appearance(grade: str = "B", seed: int = 0):
    return generate_appearance(grade, "phone", 71.5, 146.7, np.random.default_rng(seed))[0]  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A hostile peer: whatever bytes `handler` writes, no HTTP library in between."""
    tasks: set[asyncio.Task[None]] = set()

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await server.wait_closed()


async def _respond(raw: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw)
        await writer.drain()

    return handler


def _png(width: int = 64, height: int = 48) -> bytes:
    ok, data = cv2.imencode(".png", np.full((height, width, 3), 90, np.uint8))
    assert ok
    return data.tobytes()


def _ok(body: bytes, content_type: bytes = b"image/png", extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


async def test_fetch_returns_the_captured_frame() -> None:
    async with SimulatedCamera(seed=3) as camera:
        assert camera.url.startswith("http://127.0.0.1:")
        frame = await camera.capture(17, _appearance())
        fetched = await HttpTriggerCamera(camera.url, expected_size=(1280, 720)).fetch(17)
    assert fetched.dtype == np.uint8 and fetched.shape == (720, 1280, 3)
    np.testing.assert_array_equal(fetched, frame)  # PNG is lossless


async def test_frames_are_deterministic_per_seed_and_trigger() -> None:
    async with SimulatedCamera(seed=5) as first, SimulatedCamera(seed=5) as second:
        a = await first.capture(9, _appearance())
        b = await second.capture(9, _appearance())
        c = await second.capture(10, _appearance())
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


async def test_fetch_waits_for_a_frame_that_arrives_late() -> None:
    async with SimulatedCamera() as camera:
        driver = HttpTriggerCamera(camera.url, timeout_s=2.0)
        fetch = asyncio.create_task(driver.fetch(3))
        await asyncio.sleep(0.03)
        assert not fetch.done()
        await camera.capture(3, _appearance())
        frame = await fetch
    assert frame.shape == (720, 1280, 3)


async def test_missing_frame_is_frame_not_available_after_the_timeout() -> None:
    async with SimulatedCamera() as camera:
        started = time.monotonic()
        with pytest.raises(FrameNotAvailable):
            await HttpTriggerCamera(camera.url, timeout_s=0.15).fetch(404)
        elapsed = time.monotonic() - started
    assert 0.14 <= elapsed < 0.6
    assert camera.requests >= 3  # it retried rather than gave up at once


async def test_camera_keeps_only_recent_frames() -> None:
    async with SimulatedCamera(keep=4) as camera:
        for trigger in range(1, 7):
            await camera.capture(trigger, _appearance(seed=trigger))
        assert not camera.has_frame(1) and not camera.has_frame(2)
        assert all(camera.has_frame(t) for t in range(3, 7))
        with pytest.raises(FrameNotAvailable):
            await HttpTriggerCamera(camera.url, timeout_s=0.5).fetch(1)


async def test_health_endpoint() -> None:
    async with SimulatedCamera() as camera:
        await camera.capture(1, _appearance())
        reader, writer = await asyncio.open_connection("127.0.0.1", camera.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await reader.read()
        writer.close()
    head, body = response.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert b'"frames": 1' in body


@pytest.mark.parametrize(
    "request_bytes",
    [b"POST /frames/1 HTTP/1.1\r\n\r\n", b"garbage\r\n\r\n", b"GET /frames/../etc HTTP/1.1\r\n\r\n"],
)
async def test_simulated_camera_rejects_odd_requests(request_bytes: bytes) -> None:
    async with SimulatedCamera() as camera:
        reader, writer = await asyncio.open_connection("127.0.0.1", camera.port)
        writer.write(request_bytes)
        response = await reader.read()
        writer.close()
    assert response.split(b" ")[1] in (b"400", b"404", b"405")


async def test_nobody_listening_is_camera_unreachable() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(CameraUnreachable):
        await HttpTriggerCamera(f"http://127.0.0.1:{port}", timeout_s=0.1).fetch(1)


async def test_silent_peer_times_out_as_unreachable() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async with raw_server(silent) as url:
        started = time.monotonic()
        with pytest.raises(CameraUnreachable):
            await HttpTriggerCamera(url, timeout_s=0.1).fetch(1)
        assert time.monotonic() - started < 0.5


async def test_endless_header_is_cut_off() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(200):
            writer.write(b"X-Padding: " + b"a" * 1000 + b"\r\n")
            await writer.drain()
        await asyncio.sleep(10)

    async with raw_server(endless) as url:
        with pytest.raises(BadFrame, match="header"):
            await HttpTriggerCamera(url, timeout_s=2.0).fetch(1)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x00\xff garbage \r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "header line"),
        (b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", "500"),
        (_ok(b"x" * 10, extra=b"Transfer-Encoding: chunked\r\n"), "chunked"),
        (b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n" + _png(), "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 99999999\r\n\r\n", "cap"),
        (_ok(_png(), extra=b"Content-Length: 5\r\n"), "conflicting"),
        (_ok(_png())[:-10], "truncated"),
        (_ok(b"<html>hello</html>", content_type=b"text/html"), "content type"),
        (_ok(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), "PNG"),
        (_ok(_png(64, 48)), "expected"),
        (_ok(_png(1280, 720)[:40] + b"\x00" * 200), "undecodable"),
    ],
    ids=[
        "garbage",
        "bad-header",
        "server-error",
        "chunked",
        "no-length",
        "oversized",
        "two-lengths",
        "truncated",
        "html",
        "fake-png",
        "wrong-size",
        "corrupt-png",
    ],
)
async def test_hostile_responses_are_bad_frames(raw: bytes, match: str) -> None:
    async with raw_server(await _respond(raw)) as url:
        started = time.monotonic()
        with pytest.raises(BadFrame, match=match):
            await HttpTriggerCamera(url, timeout_s=1.0, expected_size=(1280, 720)).fetch(1)
        assert time.monotonic() - started < 0.5


async def test_png_bomb_is_refused_before_decoding() -> None:
    # A valid PNG header claiming 100000 x 100000 pixels: decoding would try to allocate ~30 GB.
    header = bytearray(_png())
    header[16:24] = (100000).to_bytes(4, "big") * 2
    async with raw_server(await _respond(_ok(bytes(header)))) as url:
        with pytest.raises(BadFrame, match="implausible"):
            await HttpTriggerCamera(url, timeout_s=1.0).fetch(1)


def test_errors_share_a_base_and_urls_are_checked() -> None:
    assert all(issubclass(e, CameraError) for e in (FrameNotAvailable, CameraUnreachable, BadFrame))
    for bad in ("ftp://host/", "not a url", "https://host:1"):
        with pytest.raises(ValueError):
            HttpTriggerCamera(bad)


def _bmp(width: int = 64, height: int = 48) -> bytes:
    ok, data = cv2.imencode(".bmp", np.full((height, width, 3), 90, np.uint8))
    assert ok
    return data.tobytes()


async def test_bmp_frames_are_read() -> None:
    async with raw_server(await _respond(_ok(_bmp(), b"image/bmp"))) as url:
        frame = await HttpTriggerCamera(url, timeout_s=1.0).fetch(1)
    assert frame.shape == (48, 64, 3) and int(frame[0, 0, 0]) == 90


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b[:40], "truncated"),
        (lambda b: b[:18] + (100000).to_bytes(4, "little", signed=True) * 2 + b[26:], "implausible"),
        (lambda b: b[:28] + (8).to_bytes(2, "little") + b[30:], "unsupported"),
        (lambda b: b[: len(b) // 2], "truncated"),
    ],
)
async def test_hostile_bmp_is_refused_before_decoding(mutate, match: str) -> None:
    body = mutate(_bmp())
    async with raw_server(await _respond(_ok(body, b"image/bmp"))) as url:
        with pytest.raises(BadFrame, match=match):
            await HttpTriggerCamera(url, timeout_s=1.0).fetch(1)


async def test_simulated_camera_can_serve_png_too() -> None:
    async with SimulatedCamera(image_format=".png") as camera:
        await camera.capture(3, _appearance())
        frame = await HttpTriggerCamera(camera.url, timeout_s=1.0).fetch(3)
    assert frame.shape == (720, 1280, 3)


async def test_bytes_past_content_length_are_ignored() -> None:
    body = _bmp()
    async with raw_server(await _respond(_ok(body, b"image/bmp") + b"trailing junk" * 1000)) as url:
        frame = await HttpTriggerCamera(url, timeout_s=1.0).fetch(1)
    assert frame.shape == (48, 64, 3) and int(frame[0, 0, 0]) == 90


async def test_large_frame_sent_in_small_pieces_arrives_whole() -> None:
    image = np.random.default_rng(7).integers(0, 255, (720, 1280, 3), np.uint8)
    ok, encoded = cv2.imencode(".bmp", image)
    assert ok
    raw = _ok(encoded.tobytes(), b"image/bmp")

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for start in range(0, len(raw), 65521):  # a prime, so no piece lines up with the header or rows
            writer.write(raw[start : start + 65521])
            await writer.drain()

    async with raw_server(trickle) as url:
        frame = await HttpTriggerCamera(url, timeout_s=5.0, expected_size=(1280, 720)).fetch(1)
    np.testing.assert_array_equal(frame, image)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_head_parser_only_ever_refuses_with_bad_frame(noise: bytes) -> None:
    for head in (noise + b"\r\n\r\n", b"HTTP/1.1 200 OK\r\n" + noise + b"\r\n\r\n"):
        try:
            status, headers = _parse_head(head)
        except BadFrame:
            continue
        assert 100 <= status <= 999
        assert all(name == name.lower() for name in headers)


class _Pieces:
    """Stands in for the socket so the response framing runs without I/O: each recv_into hands
    over at most the next piece (b"" once they are used up, as a closed connection does)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = [piece for piece in pieces if piece]

    def recv_into(self, buffer: memoryview) -> int:
        if not self._pieces:
            return 0
        piece = self._pieces[0]
        taken = min(len(buffer), len(piece))
        buffer[:taken] = piece[:taken]
        if taken < len(piece):
            self._pieces[0] = piece[taken:]
        else:
            self._pieces.pop(0)
        return taken


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=8),
    trailing=st.binary(max_size=50),
    end_early=st.booleans(),
)
def test_reader_reassembles_any_split_of_a_response(
    body: bytes, cuts: list[int], trailing: bytes, end_early: bool
) -> None:
    raw = _ok(body, b"image/bmp") + trailing
    end_early = end_early and bool(body)
    if end_early:
        raw = raw[: len(raw) - len(trailing) - 1]  # lose the body's last byte
    pieces, start = [], 0
    for cut in sorted(set(cuts)):
        pieces.append(raw[start:cut])
        start = max(start, cut)
    pieces.append(raw[start:])
    receiver = _Pieces(pieces)
    header = bytearray(MAX_HEADER_BYTES)
    head_end, filled = _read_head(receiver, header)
    status, headers = _parse_head(bytes(header[:head_end]))
    assert status == 200 and headers[b"content-type"] == b"image/bmp"
    length = int(headers[b"content-length"])
    if end_early:
        with pytest.raises(BadFrame, match=f"frame truncated at {len(body) - 1} of {len(body)} bytes"):
            _read_body(receiver, memoryview(header)[head_end:filled], length)
    else:
        assert _read_body(receiver, memoryview(header)[head_end:filled], length).tobytes() == body


def test_reader_refuses_a_header_that_fills_its_buffer() -> None:
    receiver = _Pieces([b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * MAX_HEADER_BYTES])
    with pytest.raises(BadFrame, match="header larger"):
        _read_head(receiver, bytearray(MAX_HEADER_BYTES))


def test_reader_refuses_a_connection_closed_inside_the_header() -> None:
    with pytest.raises(BadFrame, match="inside the response header"):
        _read_head(_Pieces([b"HTTP/1.1 200 OK\r\nContent-Le"]), bytearray(MAX_HEADER_BYTES))


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(min_value=1, max_value=67),
    height=st.integers(min_value=1, max_value=23),
    top_down=st.booleans(),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_plain_bmp_pixels_match_what_cv2_decodes(width: int, height: int, top_down: bool, seed: int) -> None:
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8)
    ok, encoded = cv2.imencode(".bmp", image)
    assert ok
    body = bytearray(encoded.tobytes())
    if top_down:
        # Same pixels stored top row first, which a negative height announces.
        row = (width * 3 + 3) // 4 * 4
        stored = np.frombuffer(bytes(body[54:]), np.uint8).reshape(height, row)[::-1]
        body[54:] = stored.tobytes()
        body[22:26] = (-height).to_bytes(4, "little", signed=True)
    layout = _plain_bmp_layout(body)
    assert layout is not None
    fast = _bmp_pixels(body, *layout)
    np.testing.assert_array_equal(fast, image)
    np.testing.assert_array_equal(fast, cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR))
    assert fast.flags.c_contiguous and fast.flags.writeable


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=54, max_size=200), st.integers(min_value=0, max_value=60))
def test_plain_bmp_layout_never_points_outside_the_body(noise: bytes, keep: int) -> None:
    body = bytearray(_bmp(4, 3)[:keep]) + noise
    body[:2] = b"BM"
    layout = _plain_bmp_layout(body)
    if layout is not None:
        frame = _bmp_pixels(body, *layout)
        assert frame.shape == (abs(layout[2]), layout[1], 3)


async def test_bmp_with_its_pixels_cut_short_is_refused() -> None:
    body = bytearray(_bmp())
    body[10:14] = (60).to_bytes(4, "little")  # pixels said to start 6 bytes later: the last row runs past the end
    async with raw_server(await _respond(_ok(bytes(body), b"image/bmp"))) as url:
        with pytest.raises(BadFrame):
            await HttpTriggerCamera(url, timeout_s=1.0).fetch(1)


async def test_frames_stay_intact_when_the_receive_buffer_is_reused() -> None:
    async with SimulatedCamera(seed=11) as camera:
        captured = {t: await camera.capture(t, _appearance(seed=t)) for t in (1, 2, 3, 4)}
        driver = HttpTriggerCamera(camera.url, timeout_s=2.0, expected_size=(1280, 720))
        first = await driver.fetch(1)
        second = await driver.fetch(2)
        together = await asyncio.gather(driver.fetch(3), driver.fetch(4), driver.fetch(1))
    np.testing.assert_array_equal(first, captured[1])  # not overwritten by the second fetch
    np.testing.assert_array_equal(second, captured[2])
    for frame, trigger in zip(together, (3, 4, 1), strict=True):
        np.testing.assert_array_equal(frame, captured[trigger])


# --- frame lifetime ------------------------------------------------------------------------------------


async def test_a_frame_in_use_is_never_overwritten_by_the_next_fetch() -> None:
    """The pipeline holds a frame (damage check, barcode fallback, queued evidence image) while the
    next units' frames arrive through the same driver and its reused receive buffer."""
    async with SimulatedCamera(seed=13) as camera:
        captured = {t: await camera.capture(t, _appearance(seed=t)) for t in (1, 2, 3)}
        driver = HttpTriggerCamera(camera.url, timeout_s=2.0, expected_size=(1280, 720))
        kept = await driver.fetch(1)
        corner = kept[:100, :100]  # a view, as a crop for the evidence image would be
        for trigger in (2, 3, 2, 3):
            other = await driver.fetch(trigger)
            assert not np.shares_memory(other, kept)
            np.testing.assert_array_equal(other, captured[trigger])
        np.testing.assert_array_equal(kept, captured[1])
        del kept
        np.testing.assert_array_equal(corner, captured[1][:100, :100])


# --- top-down BMP, lying headers, the receive buffers ----------------------------------------------------


async def test_simulated_camera_serves_top_down_bmp_and_the_driver_uses_it_in_place() -> None:
    async with SimulatedCamera(seed=17) as camera:
        captured = await camera.capture(5, _appearance(seed=5))
        served = camera._frames[5]
        fetched = await HttpTriggerCamera(camera.url, timeout_s=2.0, expected_size=(1280, 720)).fetch(5)
    assert int.from_bytes(served[22:26], "little", signed=True) == -720  # negative height: top row first
    np.testing.assert_array_equal(fetched, captured)
    assert fetched.flags.c_contiguous and fetched.flags.writeable
    assert fetched.base is not None  # a view on the receive buffer, not a copy of it


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(min_value=1, max_value=67),
    height=st.integers(min_value=1, max_value=23),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_top_down_bmp_decodes_to_the_same_frame_everywhere(width: int, height: int, seed: int) -> None:
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8)
    body = bytearray(top_down_bmp(image))
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR), image)
    assert _image_size(body) == (width, height)
    layout = _plain_bmp_layout(body)
    assert layout is not None and layout[2] == -height
    frame = _bmp_pixels(body, *layout)
    np.testing.assert_array_equal(frame, image)
    assert frame.flags.c_contiguous and frame.flags.writeable
    # Rows without padding (or a single row) are used where they lie; padded ones are copied.
    assert np.shares_memory(frame, np.frombuffer(body, np.uint8)) == (width % 4 == 0 or height == 1)


def test_bottom_up_bmp_is_flipped_into_its_own_array() -> None:
    image = np.random.default_rng(3).integers(0, 255, (6, 8, 3), np.uint8)
    body = bytearray(_bmp_bytes(image))
    layout = _plain_bmp_layout(body)
    assert layout is not None and layout[2] == 6
    frame = _bmp_pixels(body, *layout)
    np.testing.assert_array_equal(frame, image)
    assert frame.flags.c_contiguous and not np.shares_memory(frame, np.frombuffer(body, np.uint8))


def _bmp_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".bmp", image)
    assert ok
    return data.tobytes()


def _with_height(body: bytes, height: int) -> bytes:
    changed = bytearray(body)
    changed[22:26] = height.to_bytes(4, "little", signed=True)
    return bytes(changed)


@pytest.mark.parametrize(
    ("body", "expected_size", "match"),
    [
        # Says 4800 rows (plausible) but carries 48: refused before any row is read past the end.
        (_with_height(top_down_bmp(np.zeros((48, 64, 3), np.uint8)), -4800), None, "truncated"),
        (_with_height(_bmp_bytes(np.zeros((48, 64, 3), np.uint8)), 4800), None, "truncated"),
        # Says fewer rows than it carries: a valid smaller image, which the expected size catches.
        (_with_height(top_down_bmp(np.zeros((48, 64, 3), np.uint8)), -24), (64, 48), "expected"),
    ],
    ids=["top-down-too-tall", "bottom-up-too-tall", "too-short"],
)
async def test_bmp_whose_header_lies_about_its_size_is_refused(
    body: bytes, expected_size: tuple[int, int] | None, match: str
) -> None:
    async with raw_server(await _respond(_ok(body, b"image/bmp"))) as url:
        with pytest.raises(BadFrame, match=match):
            await HttpTriggerCamera(url, timeout_s=1.0, expected_size=expected_size).fetch(1)


async def test_body_cut_short_by_a_closed_connection_is_a_bad_frame() -> None:
    raw = _ok(top_down_bmp(np.zeros((720, 1280, 3), np.uint8)), b"image/bmp")
    async with raw_server(await _respond(raw[: len(raw) // 2])) as url:
        with pytest.raises(BadFrame, match="frame truncated at"):
            await HttpTriggerCamera(url, timeout_s=1.0).fetch(1)


async def test_body_that_keeps_trickling_is_cut_off_at_the_deadline() -> None:
    """A peer sending a byte every 10 ms, for a second: each read would succeed within a per-read
    timeout, so only the one overall deadline (0.2 s) makes the receiving thread hang up early."""
    raw = _ok(top_down_bmp(np.zeros((48, 64, 3), np.uint8)), b"image/bmp")
    hung_up_during_trickle = asyncio.Event()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for start in range(100):
            if reader.at_eof():  # the client closed its side
                hung_up_during_trickle.set()
                return
            writer.write(raw[start : start + 1])
            await writer.drain()
            await asyncio.sleep(0.01)
        await asyncio.sleep(10)

    async with raw_server(trickle) as url:
        with pytest.raises(CameraUnreachable):
            await HttpTriggerCamera(url, timeout_s=0.2).fetch(1)
        await asyncio.wait_for(hung_up_during_trickle.wait(), 5.0)


_BMP_FIELDS = st.fixed_dictionaries(
    {
        "offset": st.integers(min_value=0, max_value=2**32 - 1) | st.just(54),
        "header_size": st.sampled_from([12, 39, 40, 108, 124]) | st.integers(min_value=0, max_value=2**32 - 1),
        "width": st.integers(min_value=-(2**31), max_value=2**31 - 1) | st.integers(min_value=-70, max_value=70),
        "height": st.integers(min_value=-(2**31), max_value=2**31 - 1) | st.integers(min_value=-70, max_value=70),
        "planes": st.sampled_from([0, 1, 2]),
        "bits": st.sampled_from([1, 8, 16, 24, 32, 0, 65535]),
        "compression": st.sampled_from([0, 1, 3, 6]) | st.integers(min_value=0, max_value=2**32 - 1),
        "pixel_bytes": st.integers(min_value=0, max_value=20000),
    }
)


@settings(max_examples=500, deadline=None)
@given(_BMP_FIELDS)
def test_bmp_header_parser_only_refuses_with_bad_frame_and_never_reads_past_the_body(fields: dict[str, int]) -> None:
    header = (
        b"BM"
        + (54 + fields["pixel_bytes"]).to_bytes(4, "little")
        + b"\0\0\0\0"
        + fields["offset"].to_bytes(4, "little")
        + fields["header_size"].to_bytes(4, "little")
        + fields["width"].to_bytes(4, "little", signed=True)
        + fields["height"].to_bytes(4, "little", signed=True)
        + fields["planes"].to_bytes(2, "little")
        + fields["bits"].to_bytes(2, "little")
        + fields["compression"].to_bytes(4, "little")
        + b"\0" * 20
    )
    body = np.frombuffer(header + bytes(fields["pixel_bytes"]), np.uint8)
    try:
        width, height = _image_size(body)
    except BadFrame:
        pass
    else:
        assert (width, height) == (abs(fields["width"]), abs(fields["height"]))
        assert 0 < width * height <= 4096 * 4096
        assert _bmp_size(body) == (width, height)
    layout = _plain_bmp_layout(body)
    if layout is not None:
        offset, width, signed_height = layout
        frame = _bmp_pixels(body, offset, width, signed_height)
        assert frame.shape == (abs(signed_height), width, 3)
