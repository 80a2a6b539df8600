"""A serial device on a pseudo-terminal, so drivers talk to simulators through a real tty.

The controller opens the slave side (`path`, or the `link_path` symlink standing in for a stable
/dev/serial/by-id/... name); the simulator reads and writes the master side from the event loop.
Closing the device hangs the slave up, which is exactly what a driver sees when a USB serial
adapter is unplugged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import termios
import tty

_log = logging.getLogger(__name__)

# A real UART drops bytes nobody reads; bound what we hold for a controller that is not reading.
MAX_PENDING = 64 * 1024


class PtyDevice:
    """One pty pair driven from the running event loop. Subclasses override `data_received`."""

    def __init__(self, link_path: str | None = None) -> None:
        self.link_path = link_path
        self.path = ""
        self.received = bytearray()
        self.dropped = 0
        self._master: int | None = None
        self._slave: int | None = None
        self._pending = bytearray()
        self._writing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def is_open(self) -> bool:
        return self._master is not None

    def open(self) -> None:
        if self._master is not None:
            raise RuntimeError("pty device already open")
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        try:
            # Raw on the slave side so the line discipline neither echoes what we write back to us
            # nor rewrites CR/LF before a driver gets to configure the port itself.
            tty.setraw(slave, termios.TCSANOW)
            os.set_blocking(master, False)
            self.path = os.ttyname(slave)
            if self.link_path:
                _replace_symlink(self.path, self.link_path)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        # We keep our own slave fd open: without it the master reads EIO (and spins the loop)
        # whenever no controller has the port open.
        self._master, self._slave, self._loop = master, slave, loop
        loop.add_reader(master, self._on_readable)

    def close(self) -> None:
        master, slave = self._master, self._slave
        if master is None:
            return
        loop = self._loop
        self._master = self._slave = None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(master)
            if self._writing:
                loop.remove_writer(master)
        self._writing = False
        self._pending.clear()
        os.close(master)
        if slave is not None:
            os.close(slave)
        if self.link_path:
            # Only remove the link if it is still ours: a new device may already own the name.
            with contextlib.suppress(OSError):
                if os.readlink(self.link_path) == self.path:
                    os.unlink(self.link_path)

    async def __aenter__(self) -> PtyDevice:
        self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def write(self, data: bytes) -> None:
        """Queue bytes to the controller; never blocks."""
        if self._master is None:
            raise RuntimeError("pty device is closed")
        if self._pending:
            self._buffer(data)
            return
        try:
            n = os.write(self._master, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            _log.debug("pty write failed: %s", exc)
            return
        if n < len(data):
            self._buffer(data[n:])

    def _buffer(self, data: bytes) -> None:
        self._pending += data
        overflow = len(self._pending) - MAX_PENDING
        if overflow > 0:
            del self._pending[:overflow]
            self.dropped += overflow
        if not self._writing and self._loop is not None and self._master is not None:
            self._loop.add_writer(self._master, self._on_writable)
            self._writing = True

    def _on_writable(self) -> None:
        if self._master is None:
            return
        try:
            n = os.write(self._master, self._pending)
        except BlockingIOError:
            return
        except OSError:
            n = len(self._pending)
        del self._pending[:n]
        if not self._pending and self._loop is not None:
            self._loop.remove_writer(self._master)
            self._writing = False

    def _on_readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                _log.debug("pty read failed: %s", exc)
            return
        if data:
            self.received += data
            del self.received[:-MAX_PENDING]
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        """Called with every chunk the controller wrote. Default: only kept in `received`."""


def _replace_symlink(target: str, link_path: str) -> None:
    parent = os.path.dirname(link_path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = f"{link_path}.tmp-{os.getpid()}-{id(target)}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    # rename() over the old link is atomic: an opener sees the old device or the new one, never none.
    os.replace(tmp, link_path)
