"""The header `seq` across restarts: reserved from the journal in blocks, topped up while running.

Each start reserves a block of SEQ_BLOCK numbers past everything reserved before (journal `meta`),
so a restart never reuses a number even though the numbers taken are not written one by one. A run
that sends more than a block would run past its reservation into the next start's numbers, so the
reservation is extended (one more block) once half of the current one is used, long before its end.
"""

from __future__ import annotations

import logging

from edge.contract import Envelope
from edge.journal import SEQ_BLOCK, Journal

log = logging.getLogger("edge.sequence")


class SeqReservation:
    """The envelope's numbers stay within what the journal has reserved (`top_up` keeps them so)."""

    def __init__(self, journal: Journal, envelope: Envelope, reserved_to: int) -> None:
        self.journal = journal
        self.envelope = envelope
        self.reserved_to = reserved_to  # the highest seq this run may use without reserving more

    @classmethod
    async def start(cls, journal: Journal, controller: str) -> SeqReservation:
        first = await journal.reserve_sequence_block()
        return cls(journal, Envelope(controller, first), first + SEQ_BLOCK - 1)

    async def top_up(self) -> bool:
        """Reserve the next block once half the current one is used; True when it did."""
        if self.envelope.next_seq <= self.reserved_to - SEQ_BLOCK // 2:
            return False
        # Each reservation moves the journal's mark one block on, past this run's numbers.
        self.reserved_to = await self.journal.reserve_sequence_block() + SEQ_BLOCK - 1
        log.info("seq reserved up to %d (next %d)", self.reserved_to, self.envelope.next_seq)
        return True
