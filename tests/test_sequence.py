"""Header seq across restarts (edge/sequence.py), on a real SQLite journal."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from edge.contract import Envelope
from edge.journal import SEQ_BLOCK, Journal
from edge.sequence import SeqReservation


def test_a_run_longer_than_a_block_never_hands_its_numbers_to_the_next_start(tmp_path: Path) -> None:
    async def run() -> tuple[int, int, bool]:
        async with Journal(tmp_path / "j.db") as journal:
            seq = await SeqReservation.start(journal, "edge-t")
            assert not await seq.top_up()  # plenty left
            for _ in range(SEQ_BLOCK // 2 + 10):  # a long run: past half its block
                seq.envelope.take_seq()
            topped = await seq.top_up()
            assert not await seq.top_up()  # once per half block
            for _ in range(SEQ_BLOCK // 2 + 10):  # and on, past the first block's end
                seq.envelope.take_seq()
            last_used = seq.envelope.next_seq - 1
        async with Journal(tmp_path / "j.db") as journal:  # a restart
            restarted = await SeqReservation.start(journal, "edge-t")
            return last_used, restarted.envelope.next_seq, topped

    last_used, first_after_restart, topped = asyncio.run(run())
    assert topped
    assert last_used > SEQ_BLOCK  # this run went past the block it started with
    assert first_after_restart > last_used


def test_seq_is_unique_when_messages_are_built_on_several_threads() -> None:
    envelope = Envelope("edge-t")
    taken: list[list[int]] = [[] for _ in range(4)]

    def build(out: list[int]) -> None:
        for _ in range(20_000):
            out.append(envelope.build("status", {})["seq"])

    threads = [threading.Thread(target=build, args=(out,)) for out in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [seq for out in taken for seq in out]
    assert sorted(every) == list(range(1, 80_001))
