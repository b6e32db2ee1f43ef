"""NUT-09 restore of a seed's outputs (NUT-13): which counters of a keyset the mint signed."""

from __future__ import annotations

from dataclasses import replace

from paygress.cashu.mint_client import MintClient
from paygress.cashu.models import Proof
from paygress.cashu.nut13 import Seed
from paygress.cashu.outputs import prepare_outputs, unblind
from paygress.core.ledger import RESTORE_GAP_COUNTERS

BATCH = 100


async def scan(
    client: MintClient,
    seed: Seed,
    keyset_id: str,
    keys: dict[int, str],
    *,
    start: int = 0,
    mark: int = 0,
    gap: int = RESTORE_GAP_COUNTERS,
) -> tuple[list[Proof], int]:
    """Asks the mint for its signatures on our outputs from counter `start` on, up to `mark`
    (the ledger's counter mark) and then on until `gap` counters in a row came back unsigned:
    the wallet never leaves a longer gap (see paygress/core/ledger.py). Returns the proofs
    found (DLEQ-checked) and one past the highest signed counter (at least `start`)."""
    proofs: list[Proof] = []
    next_counter = start
    counter = start
    while counter < max(mark, next_counter + gap):
        # The mint tells the amounts; the messages carry a dummy one (as NUT-09 wallets do).
        outputs = prepare_outputs(seed, keyset_id, counter, [1] * BATCH)
        returned, signatures = await client.restore([o.message() for o in outputs])
        by_b = {o.B_: o for o in outputs}
        for message, signature in zip(returned, signatures, strict=True):
            output = replace(by_b[message.B_], amount=signature.amount)
            proofs += unblind([output], [signature], keys, require_dleq=True)
            next_counter = max(next_counter, output.counter + 1)
        counter += BATCH
    return proofs, next_counter
