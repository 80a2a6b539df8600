"""PlcLink against a Modbus server that is not pymodbus (modbus-tk, threaded), so the link is
not just agreeing with the library on both ends. The test itself plays the PLC program."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import modbus_tk.defines as cst
import pytest
from modbus_tk import hooks
from modbus_tk.modbus_tcp import TcpServer

from plc.client import PlcLink
from plc.register_map import RegisterMap, default_map

from .conftest import until

# modbus-tk's server thread still calls Event.isSet(); not our code, not our concern here.
pytestmark = pytest.mark.filterwarnings("ignore:isSet:DeprecationWarning")

_BLOCK_TYPES = {
    "coil": cst.COILS,
    "discrete_input": cst.DISCRETE_INPUTS,
    "input_register": cst.ANALOG_INPUTS,
    "holding_register": cst.HOLDING_REGISTERS,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tk_plc() -> Iterator[tuple[Any, int]]:
    """A modbus-tk TCP server in its own thread holding the default map's blocks."""
    port = _free_port()
    server = TcpServer(port=port, address="127.0.0.1", timeout_in_sec=1)
    slave = server.add_slave(1)
    for table, blocks in default_map().blocks().items():
        for address, count in blocks:
            slave.add_block(table, _BLOCK_TYPES[table], address, count)
    server.start()
    try:
        yield slave, port
    finally:
        server.stop()


def _link(port: int, register_map: RegisterMap | None = None) -> PlcLink:
    return PlcLink("127.0.0.1", port, register_map or default_map(), reconnect_max_s=0.2, timeout_s=0.3)


async def test_poll_arrival_and_divert_against_modbus_tk(tk_plc: tuple[Any, int]) -> None:
    slave, port = tk_plc
    ir = default_map()["scan_item_id"].address
    fc16: list[bytes] = []

    def on_fc16(args: tuple[Any, bytes]) -> None:
        fc16.append(args[1])

    hooks.install_hook("modbus.Slave.handle_write_multiple_registers_request", on_fc16)
    heart = asyncio.create_task(_plc_heartbeat_and_arming(slave))
    try:
        async with _link(port) as link:
            await link.wait_online(3)
            await link.wait_armed(3)
            await until(lambda: link.signals.get("scan_item_id") == 0, what="first poll")
            slave.set_values("input_register", ir, [1])
            assert (await asyncio.wait_for(link.arrivals.get(), 2)).item_id == 1
            # Two units between polls: both reported, in order.
            slave.set_values("input_register", ir, [3])
            got = [(await asyncio.wait_for(link.arrivals.get(), 2)).item_id for _ in range(2)]
            assert got == [2, 3]
            slave.set_values("input_register", ir, [42])
            # 39 units in one poll: the newest 16 are reported in order, the rest counted missed.
            burst = [(await asyncio.wait_for(link.arrivals.get(), 2)).item_id for _ in range(16)]
            assert burst == list(range(27, 43))
            assert link.counters["missed_arrivals"] == 39 - 16
            assert link.arrivals.empty()

            slave.set_values("discrete_input", 1, [1])
            slave.set_values("input_register", 5, [0x0001, 0x0002])
            await until(lambda: link.signals.get("scan_eye") is True, what="scan eye")
            await until(lambda: link.signals.get("encoder_count") == 0x00010002, what="encoder")

            # Play the PLC: when a new request seq lands in the holding registers, ack it.
            async def plc_program() -> list[int]:
                while True:
                    req = slave.get_values("holding_register", 1, 3)
                    if req[0] != 0:
                        slave.set_values("input_register", 9, [req[1], req[2], 1])
                        slave.set_values("input_register", 8, [req[0]])  # seq last: ack is complete
                        return list(req)
                    await asyncio.sleep(0.002)

            plc = asyncio.create_task(plc_program())
            result = await link.divert(42, 3, timeout_s=1.0)
            request = await plc
            assert result.status == "accepted"
            assert request == [result.seq, 42, 3]
            # One FC16 PDU carrying seq, item and lane together (fc, addr=1, count=3, 6 bytes, values).
            divert_pdus = [p for p in fc16 if p[1:3] == b"\x00\x01"]
            assert len(divert_pdus) == 1
            assert divert_pdus[0][:6] == b"\x10\x00\x01\x00\x03\x06"

            # No ack and no confirmed cancel: the unit may be in lane 2 or the reject lane.
            assert (await link.divert(42, 2, timeout_s=0.1)).status == "uncertain"

            # The PLC misses the divert but confirms the cancel (lane 0): the unit is known to be
            # riding to the reject lane, so the result is a plain no_ack.
            async def ack_only_cancels() -> None:
                seen = slave.get_values("holding_register", 1, 1)[0]
                while True:
                    req = slave.get_values("holding_register", 1, 3)
                    if req[0] != seen and req[2] == 0:
                        slave.set_values("input_register", 9, [req[1], 0, 1])
                        slave.set_values("input_register", 8, [req[0]])
                        return
                    await asyncio.sleep(0.002)

            canceller = asyncio.create_task(ack_only_cancels())
            assert (await link.divert(42, 4, timeout_s=0.15)).status == "no_ack"
            await asyncio.wait_for(canceller, 2)

            hb = slave.get_values("holding_register", 0, 1)[0]
            await until(
                lambda: slave.get_values("holding_register", 0, 1)[0] >= hb + 2, what="gateway heartbeat"
            )
    finally:
        heart.cancel()
        hooks.uninstall_hook("modbus.Slave.handle_write_multiple_registers_request", on_fc16)


async def _plc_heartbeat_and_arming(slave: Any) -> None:
    """The PLC's side of the heartbeat contract in docs/plc.md: count plc_heartbeat, and set the
    armed bit of status_word only while the gateway heartbeat keeps changing."""
    beat, last_gw, gw_at = 0, None, 0.0
    while True:
        now = time.monotonic()
        gw = slave.get_values("holding_register", 0, 1)[0]
        if gw != last_gw:
            gw_at = now if last_gw is not None else 0.0
            last_gw = gw
        beat = (beat + 1) & 0xFFFF
        armed = gw_at > 0 and now - gw_at <= 0.5
        slave.set_values("input_register", 0, [beat, 0x0001 | (0x0004 if armed else 0)])
        await asyncio.sleep(0.05)


async def test_modbus_tk_exception_responses_are_counted(tk_plc: tuple[Any, int]) -> None:
    _, port = tk_plc
    d = default_map().to_dict()
    d["vendor_extra"] = {"table": "input_register", "address": 500, "type": "float32"}
    async with _link(port, RegisterMap.from_dict(d)) as link:
        await until(lambda: link.counters["exceptions"] >= 3, what="illegal address exceptions")
        assert link.state != "online"
        assert link.counters["reconnects"] == 0
        assert "plc_heartbeat" in link.signals and "vendor_extra" not in link.signals
