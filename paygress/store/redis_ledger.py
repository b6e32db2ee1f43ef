"""The wallet's Ledger port on Redis: one ledger for every process of a seed.

Keys (all under the gateway's hash tag, see redis_db.py):
  swaps        HASH  record id -> the record (JSON: kind, mint, keyset, amounts, inputs, grant)
  swapctr      HASH  record id -> its counters ("3,4,9")
  unknown      SET   ids of records whose outcome must be found out
  claims       HASH  record id -> "process|until ms": who sends or finds it out now
  held         STR   counters held by open records (at most RESTORE_GAP_COUNTERS)
  marks        HASH  keyset id -> one past the highest counter ever reserved
  free:<ks>    ZSET  counters of a keyset given back (never signed), lowest first
  proofs       HASH  Y -> the proof with its mint and unit (JSON)
  state        HASH  Y -> unspent | reserved | pending:<withdrawal> | spent
  withdrawals  HASH  withdrawal id -> mint, unit, amount, time (JSON)
  locked       HASH  Y -> a proof accepted offline, queued or being swapped (JSON: fingerprint,
                     mint, unit, proof, accepted_at)
  lockswap     HASH  Y -> the settle record that takes it (absent: queued)
  lost         HASH  Y -> a locked proof the mint said someone else spent (JSON, as `locked`)
  received     HASH  Y -> the swap that spent it into our outputs (never accepted again)

The money invariants (paygress/core/ledger.py) hold because each step is one Lua script,
which Redis runs atomically: `begin_swap` reserves counters (free ones lowest first, then
from the mark), counts them as held and writes the record claimed by its creator, or changes
nothing; `settle_swap` stores proofs and grant and deletes the record in one step, and does
nothing for a record that is gone; only `abandon_swap(release_counters=True)` frees counters.
`accept_locked` queues locked proofs with their grant in one step; a `settle` record takes
queued proofs in `begin_swap` and gives them back (or marks them lost) in `abandon_swap`.
The grant a redemption pays for is written by `settle_swap` into the keys of redis_grants.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from paygress.cashu.models import Proof
from paygress.core.ledger import (
    RESTORE_GAP_COUNTERS,
    Balance,
    CountersBusy,
    LockedProof,
    NewSwap,
    ProofsKnown,
    ProofsTaken,
    QueueFull,
    SwapClaimed,
    SwapExists,
    SwapKind,
    SwapRecord,
    whole_tokens,
)
from paygress.core.model import Grant
from paygress.core.pricing import Mode
from paygress.store.codec import grant_from_json, grant_to_json, proof_from_dict, proof_to_dict
from paygress.store.redis_db import RedisDatabase

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: swaps swapctr claims held marks free:<ks> state locked lockswap
# ARGV: id count max_held record keyset owner claim_ms kind input-Ys...
BEGIN_SWAP = (
    _NOW
    + """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return redis.error_reply('PAYGRESS_EXISTS')
end
local count = tonumber(ARGV[2])
local held = tonumber(redis.call('GET', KEYS[4]) or '0')
if held + count > tonumber(ARGV[3]) then
  return redis.error_reply('PAYGRESS_BUSY ' .. held .. ' counters held by open swaps')
end
if ARGV[8] == 'withdraw' then
  for i = 9, #ARGV do
    if redis.call('HGET', KEYS[7], ARGV[i]) ~= 'unspent' then
      return redis.error_reply('PAYGRESS_TAKEN ' .. ARGV[i])
    end
  end
  for i = 9, #ARGV do redis.call('HSET', KEYS[7], ARGV[i], 'reserved') end
end
if ARGV[8] == 'settle' then  -- queued locked proofs only, each taken by one record
  for i = 9, #ARGV do
    local y = ARGV[i]
    if redis.call('HEXISTS', KEYS[8], y) == 0 or redis.call('HEXISTS', KEYS[9], y) == 1 then
      return redis.error_reply('PAYGRESS_KNOWN locked proof ' .. string.sub(y, 1, 16) .. ' taken')
    end
  end
  for i = 9, #ARGV do redis.call('HSET', KEYS[9], ARGV[i], ARGV[1]) end
end
local counters = {}
local free = redis.call('ZRANGE', KEYS[6], 0, count - 1)
for _, c in ipairs(free) do table.insert(counters, tonumber(c)) end
if #free > 0 then redis.call('ZREM', KEYS[6], unpack(free)) end
local mark = tonumber(redis.call('HGET', KEYS[5], ARGV[5]) or '0')
local fresh = count - #free
for i = 0, fresh - 1 do table.insert(counters, mark + i) end
if fresh > 0 then redis.call('HSET', KEYS[5], ARGV[5], mark + fresh) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], table.concat(counters, ','))
redis.call('INCRBY', KEYS[4], count)
redis.call('HSET', KEYS[3], ARGV[1], ARGV[6] .. '|' .. (now + tonumber(ARGV[7])))
return counters
"""
)

# KEYS: swaps swapctr claims unknown   ARGV: id owner claim_ms
CLAIM_SWAP = (
    _NOW
    + """
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return false end
local claim = redis.call('HGET', KEYS[3], ARGV[1])
if claim then
  local owner, until_ms = string.match(claim, '^(.-)|(%d+)$')
  if owner ~= ARGV[2] then
    if tonumber(until_ms) > now then return redis.error_reply('PAYGRESS_CLAIMED') end
    redis.call('SADD', KEYS[4], ARGV[1])  -- its claimer may have sent it
  end
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2] .. '|' .. (now + tonumber(ARGV[3])))
return {record, redis.call('HGET', KEYS[2], ARGV[1]), redis.call('SISMEMBER', KEYS[4], ARGV[1])}
"""
)

# KEYS: swaps unknown   ARGV: id
MARK_UNKNOWN = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then redis.call('SADD', KEYS[2], ARGV[1]) end
return 1
"""

_DROP_RECORD = """
local counters = redis.call('HGET', KEYS[2], ARGV[1]) or ''
local count = 0
for _ in string.gmatch(counters, '%d+') do count = count + 1 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('DECRBY', KEYS[5], count)
"""

# Writes a new grant (one with the same id stays as it is).
# ARGV[i..i+5]: grant-id grant mode left expires pod; KEYS[k..k+4]: grants pool ends live pod:<p>
_WRITE_GRANT = """
local function write_grant(i, k)
  local grant = ARGV[i]
  if grant == '' or redis.call('HSETNX', KEYS[k], grant, ARGV[i + 1]) == 0 then return end
  if ARGV[i + 2] == 'per_request' then
    redis.call('HSET', KEYS[k + 1], grant, ARGV[i + 3])
    if tonumber(ARGV[i + 3]) > 0 then redis.call('ZADD', KEYS[k + 3], '+inf', grant) end
  else
    redis.call('HSET', KEYS[k + 2], grant, ARGV[i + 4])
    redis.call('ZADD', KEYS[k + 3], ARGV[i + 4], grant)
  end
  if ARGV[i + 5] ~= '' then redis.call('SADD', KEYS[k + 4], grant) end
end
"""

# KEYS: swaps swapctr claims unknown held proofs state grants pool ends live pod:<pod>
#       locked lockswap received
# ARGV: id kind n (Y proof)*n grant-id grant mode left expires pod input-Ys...
SETTLE_SWAP = (
    _WRITE_GRANT
    + """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  if redis.call('HSETNX', KEYS[6], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HSET', KEYS[7], ARGV[i], 'unspent')
  end
  i = i + 2
end
write_grant(i, 8)
for j = i + 6, #ARGV do
  if ARGV[2] == 'withdraw' then
    redis.call('HSET', KEYS[7], ARGV[j], 'spent')
  else  -- spent now, by us: never to be accepted offline again, in any token
    if ARGV[2] == 'settle' then
      redis.call('HDEL', KEYS[13], ARGV[j])
      redis.call('HDEL', KEYS[14], ARGV[j])
    end
    redis.call('HSET', KEYS[15], ARGV[j], ARGV[1])
  end
end
"""
    + _DROP_RECORD
    + "return 1\n"
)

# KEYS: swaps swapctr claims unknown held free:<ks> state locked lockswap lost
# ARGV: id release inputs-spent kind input-Ys...
ABANDON_SWAP = (
    """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[4] == 'settle' then  -- back to the queue, or lost if someone else spent them
  for j = 5, #ARGV do
    if redis.call('HGET', KEYS[9], ARGV[j]) == ARGV[1] then
      redis.call('HDEL', KEYS[9], ARGV[j])
      if ARGV[3] == '1' then
        redis.call('HSET', KEYS[10], ARGV[j], redis.call('HGET', KEYS[8], ARGV[j]))
        redis.call('HDEL', KEYS[8], ARGV[j])
      end
    end
  end
end
if ARGV[2] == '1' then
  for c in string.gmatch(redis.call('HGET', KEYS[2], ARGV[1]) or '', '%d+') do
    redis.call('ZADD', KEYS[6], c, c)
  end
end
if ARGV[4] == 'withdraw' then
  local back = 'unspent'
  if ARGV[3] == '1' then back = 'spent' end
  for j = 5, #ARGV do
    if redis.call('HGET', KEYS[7], ARGV[j]) == 'reserved' then
      redis.call('HSET', KEYS[7], ARGV[j], back)
    end
  end
end
"""
    + _DROP_RECORD
    + "return 1\n"
)

# KEYS: locked lost received proofs grants pool ends live pod:<pod>
# ARGV: fingerprint max-queue n (Y locked-json)*n grant-id grant mode left expires pod
ACCEPT_LOCKED = (
    _WRITE_GRANT
    + """
local n = tonumber(ARGV[3])
local mine = 0
for i = 0, n - 1 do
  local y = ARGV[4 + 2 * i]
  local held = redis.call('HGET', KEYS[1], y)
  if held and cjson.decode(held)['fingerprint'] == ARGV[1] then
    mine = mine + 1
  elseif held or redis.call('HEXISTS', KEYS[2], y) == 1 or redis.call('HEXISTS', KEYS[3], y) == 1
      or redis.call('HEXISTS', KEYS[4], y) == 1 then
    return redis.error_reply('PAYGRESS_KNOWN proof ' .. string.sub(y, 1, 16) .. ' is held already')
  end
end
if mine == n then return 0 end  -- accepted before (by another process): done again
if mine > 0 then return redis.error_reply('PAYGRESS_KNOWN the token was accepted in part') end
local queued = redis.call('HLEN', KEYS[1])
if queued + n > tonumber(ARGV[2]) then
  return redis.error_reply('PAYGRESS_FULL ' .. queued .. ' locked proofs queued')
end
for i = 0, n - 1 do redis.call('HSET', KEYS[1], ARGV[4 + 2 * i], ARGV[5 + 2 * i]) end
write_grant(4 + 2 * n, 5)
return 1
"""
)

# KEYS: marks   ARGV: keyset at-least
ADVANCE = """
local mark = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > mark then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"""

# KEYS: proofs state   ARGV: n (Y proof)*n spent-Ys...
ADD_RESTORED = """
local n = tonumber(ARGV[1])
local new = {}
for i = 0, n - 1 do
  local y = ARGV[2 + 2 * i]
  if redis.call('HSETNX', KEYS[1], y, ARGV[3 + 2 * i]) == 1 then
    redis.call('HSET', KEYS[2], y, 'unspent')
    table.insert(new, y)
  end
end
for j = 2 + 2 * n, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[j]) == 'unspent' then
    redis.call('HSET', KEYS[2], ARGV[j], 'spent')
  end
end
return new
"""

# KEYS: state withdrawals   ARGV: withdrawal record Ys...   (done again: no change)
MARK_WITHDRAWN = """
local tag = 'pending:' .. ARGV[1]
for i = 3, #ARGV do
  local state = redis.call('HGET', KEYS[1], ARGV[i])
  if state ~= 'unspent' and state ~= tag then
    return redis.error_reply('PAYGRESS_TAKEN ' .. ARGV[i])
  end
end
for i = 3, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], tag) end
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

# KEYS: state   ARGV: Ys...
SETTLE_WITHDRAWN = """
for i = 1, #ARGV do
  local state = redis.call('HGET', KEYS[1], ARGV[i])
  if state and string.sub(state, 1, 8) == 'pending:' then
    redis.call('HSET', KEYS[1], ARGV[i], 'spent')
  end
end
return 1
"""


class RedisLedger:
    """Implements paygress.core.ledger.Ledger on Redis, for every process of a seed."""

    def __init__(self, db: RedisDatabase, owner: str, *, claim_seconds: float = 10.0) -> None:
        self.db = db
        self.owner = owner  # this process, as named in its claims
        self.claim_ms = int(claim_seconds * 1000)  # a new record's claim (claim_swap renews)
        self._begin = db.script(BEGIN_SWAP)
        self._claim = db.script(CLAIM_SWAP)
        self._mark_unknown = db.script(MARK_UNKNOWN)
        self._settle = db.script(SETTLE_SWAP)
        self._abandon = db.script(ABANDON_SWAP)
        self._advance = db.script(ADVANCE)
        self._add_restored = db.script(ADD_RESTORED)
        self._mark_withdrawn = db.script(MARK_WITHDRAWN)
        self._settle_withdrawn = db.script(SETTLE_WITHDRAWN)
        self._accept_locked = db.script(ACCEPT_LOCKED)
        k = db.key
        self.k_swaps, self.k_ctr, self.k_claims, self.k_unknown = (
            k("swaps"),
            k("swapctr"),
            k("claims"),
            k("unknown"),
        )
        self.k_held, self.k_marks, self.k_proofs, self.k_state = (
            k("held"),
            k("marks"),
            k("proofs"),
            k("state"),
        )
        self.k_withdrawals = k("withdrawals")
        self.k_locked, self.k_lockswap, self.k_lost, self.k_received = (
            k("locked"),
            k("lockswap"),
            k("lost"),
            k("received"),
        )

    @property
    def _record_keys(self) -> list[str]:
        return [self.k_swaps, self.k_ctr, self.k_claims, self.k_unknown, self.k_held]

    # -- swaps -------------------------------------------------------------------------------

    async def begin_swap(self, swap: NewSwap) -> SwapRecord:
        now = time.time()
        record = {
            "kind": swap.kind.value,
            "mint": swap.mint,
            "unit": swap.unit,
            "keyset_id": swap.keyset_id,
            "amounts": list(swap.amounts),
            "inputs": [proof_to_dict(p) for p in swap.inputs],
            "grant": grant_to_json(swap.grant) if swap.grant else None,
            "created_at": now,
        }
        keys = [
            self.k_swaps,
            self.k_ctr,
            self.k_claims,
            self.k_held,
            self.k_marks,
            self.db.key("free", swap.keyset_id),
            self.k_state,
            self.k_locked,
            self.k_lockswap,
        ]
        args: list[Any] = [
            swap.id,
            len(swap.amounts),
            RESTORE_GAP_COUNTERS,
            json.dumps(record),
            swap.keyset_id,
            self.owner,
            self.claim_ms,
            swap.kind.value,
        ]
        if swap.kind in (SwapKind.WITHDRAW, SwapKind.SETTLE):
            args += [p.y() for p in swap.inputs]
        try:
            counters = await self.db.call(lambda: self._begin(keys, args))
        except ResponseError as exc:
            raise _refusal(exc) from None
        return SwapRecord(
            id=swap.id,
            kind=swap.kind,
            mint=swap.mint,
            unit=swap.unit,
            keyset_id=swap.keyset_id,
            counters=tuple(int(c) for c in counters),
            amounts=swap.amounts,
            inputs=swap.inputs,
            grant=swap.grant,
            created_at=now,
        )

    async def claim_swap(self, swap_id: str, seconds: float) -> SwapRecord | None:
        keys = [self.k_swaps, self.k_ctr, self.k_claims, self.k_unknown]
        args: list[str | int] = [swap_id, self.owner, int(seconds * 1000)]
        try:
            found = await self.db.call(lambda: self._claim(keys, args))
        except ResponseError as exc:
            raise _refusal(exc) from None
        if not found:
            return None
        text, counters, unknown = found
        return _record(swap_id, text, counters, bool(unknown))

    async def mark_unknown(self, swap_id: str) -> None:
        await self.db.call(lambda: self._mark_unknown([self.k_swaps, self.k_unknown], [swap_id]))

    async def swap_record(self, swap_id: str) -> SwapRecord | None:
        text, counters, unknown = await self.db.atomic(
            ("HGET", self.k_swaps, swap_id),
            ("HGET", self.k_ctr, swap_id),
            ("SISMEMBER", self.k_unknown, swap_id),
        )
        return _record(swap_id, text, counters, bool(unknown)) if text else None

    async def swap_records(self) -> list[SwapRecord]:
        texts, counters, unknown = await self.db.atomic(
            ("HGETALL", self.k_swaps), ("HGETALL", self.k_ctr), ("SMEMBERS", self.k_unknown)
        )
        records = [
            _record(sid, text, counters.get(sid, ""), sid in unknown) for sid, text in texts.items()
        ]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    async def settle_swap(self, record: SwapRecord, proofs: Sequence[Proof]) -> None:
        grant = record.grant
        keys = [
            *self._record_keys,
            self.k_proofs,
            self.k_state,
            *self._grant_keys(grant),
            self.k_locked,
            self.k_lockswap,
            self.k_received,
        ]
        args: list[Any] = [record.id, record.kind.value, len(proofs)]
        for p in proofs:
            args += [p.y(), _proof_json(record.mint, record.unit, p)]
        args += _grant_args(grant)
        args += [p.y() for p in record.inputs]
        await self.db.call(lambda: self._settle(keys, args))

    async def abandon_swap(
        self, record: SwapRecord, *, release_counters: bool, inputs_spent: bool = False
    ) -> None:
        keys = [
            *self._record_keys,
            self.db.key("free", record.keyset_id),
            self.k_state,
            self.k_locked,
            self.k_lockswap,
            self.k_lost,
        ]
        args: list[Any] = [
            record.id,
            int(release_counters),
            int(inputs_spent),
            record.kind.value,
        ]
        if record.kind in (SwapKind.WITHDRAW, SwapKind.SETTLE):
            args += [p.y() for p in record.inputs]
        await self.db.call(lambda: self._abandon(keys, args))

    # -- counters ----------------------------------------------------------------------------

    async def counter_mark(self, keyset_id: str) -> int:
        mark = await self.db.command("HGET", self.k_marks, keyset_id)
        return int(mark or 0)

    async def advance_counter(self, keyset_id: str, at_least: int) -> None:
        await self.db.call(lambda: self._advance([self.k_marks], [keyset_id, at_least]))

    # -- proofs ------------------------------------------------------------------------------

    async def add_restored(
        self, mint: str, unit: str, unspent: Sequence[Proof], spent_ys: Sequence[str]
    ) -> list[Proof]:
        args: list[Any] = [len(unspent)]
        for p in unspent:
            args += [p.y(), _proof_json(mint, unit, p)]
        args += list(spent_ys)
        new = set(
            await self.db.call(lambda: self._add_restored([self.k_proofs, self.k_state], args))
        )
        return [p for p in unspent if p.y() in new]

    async def balances(self) -> list[Balance]:
        totals: dict[tuple[str, str], list[int]] = {}
        for mint, unit, state, proof in await self._proofs():
            total = totals.setdefault((mint, unit), [0, 0])
            if state in ("unspent", "reserved"):
                total[0] += proof.amount
            elif state.startswith("pending:"):
                total[1] += proof.amount
        return [Balance(m, u, s, p) for (m, u), (s, p) in sorted(totals.items())]

    async def unspent_proofs(self, mint: str, unit: str) -> list[Proof]:
        found = [
            p for m, u, state, p in await self._proofs() if (m, u, state) == (mint, unit, "unspent")
        ]
        return sorted(found, key=lambda p: p.amount)

    async def mark_withdrawn(
        self, withdrawal_id: str, mint: str, unit: str, proofs: Sequence[Proof]
    ) -> None:
        record = json.dumps(
            {
                "mint": mint,
                "unit": unit,
                "amount": sum(p.amount for p in proofs),
                "created_at": time.time(),
            }
        )
        args = [withdrawal_id, record, *(p.y() for p in proofs)]
        keys = [self.k_state, self.k_withdrawals]
        try:
            await self.db.call(lambda: self._mark_withdrawn(keys, args))
        except ResponseError as exc:
            raise _refusal(exc) from None

    async def pending_withdrawn(self) -> list[tuple[str, str, Proof]]:
        return [
            (state.removeprefix("pending:"), mint, p)
            for mint, _unit, state, p in await self._proofs()
            if state.startswith("pending:")
        ]

    async def settle_withdrawn(self, spent_ys: Sequence[str]) -> None:
        if spent_ys:
            await self.db.call(lambda: self._settle_withdrawn([self.k_state], list(spent_ys)))

    # -- proofs accepted offline -------------------------------------------------------------

    async def accept_locked(
        self,
        fingerprint: str,
        mint: str,
        unit: str,
        proofs: Sequence[Proof],
        grant: Grant,
        *,
        max_queue: int,
    ) -> None:
        now = time.time()
        keys = [
            self.k_locked,
            self.k_lost,
            self.k_received,
            self.k_proofs,
            *self._grant_keys(grant),
        ]
        args: list[Any] = [fingerprint, max_queue, len(proofs)]
        for p in proofs:
            locked = {"fingerprint": fingerprint, "mint": mint, "unit": unit}
            args += [p.y(), json.dumps({**locked, "proof": proof_to_dict(p), "accepted_at": now})]
        args += _grant_args(grant)
        try:
            await self.db.call(lambda: self._accept_locked(keys, args))
        except ResponseError as exc:
            raise _refusal(exc) from None

    async def locked_queue(self, limit: int) -> list[LockedProof]:
        locked, taken = await self._locked()
        queued = sorted(
            (lp for y, lp in locked.items() if y not in taken),
            key=lambda lp: (lp.accepted_at, lp.fingerprint, lp.proof.y()),
        )
        return whole_tokens(queued, limit)

    async def locked_summary(self) -> tuple[int, float]:
        locked, _ = await self._locked()
        return len(locked), min((lp.accepted_at for lp in locked.values()), default=0.0)

    async def _locked(self) -> tuple[dict[str, LockedProof], set[str]]:
        """Every locked proof queued or being swapped (by Y), and the Ys being swapped."""
        texts, taken = await self.db.atomic(("HGETALL", self.k_locked), ("HKEYS", self.k_lockswap))
        locked = {}
        for y, text in texts.items():
            data = json.loads(text)
            proof = proof_from_dict(data["proof"])
            locked[y] = LockedProof(
                proof, data["mint"], data["unit"], data["fingerprint"], float(data["accepted_at"])
            )
        return locked, set(taken)

    def _grant_keys(self, grant: Grant | None) -> list[str]:
        """The keys _WRITE_GRANT writes."""
        names = ("grants", "pool", "ends", "live")
        return [*(self.db.key(n) for n in names), self.db.key("pod", grant.pod if grant else "")]

    async def _proofs(self) -> list[tuple[str, str, str, Proof]]:
        """Every proof held or ever held: (mint, unit, state, proof)."""
        texts, states = await self.db.atomic(("HGETALL", self.k_proofs), ("HGETALL", self.k_state))
        found = []
        for y, text in texts.items():
            data = json.loads(text)
            found.append((data["mint"], data["unit"], states.get(y, "unspent"), _proof(data)))
        return found


def _grant_args(grant: Grant | None) -> list[Any]:
    """The arguments _WRITE_GRANT reads: id, JSON, mode, requests left, end, pod."""
    if grant is None:
        return ["", "", "", 0, 0, ""]
    left = grant.requests_left if grant.mode is Mode.PER_REQUEST else 0
    return [grant.id, grant_to_json(grant), grant.mode.value, left, grant.expires_at, grant.pod]


def _proof_json(mint: str, unit: str, proof: Proof) -> str:
    return json.dumps({"mint": mint, "unit": unit, **proof_to_dict(proof)})


def _proof(data: dict[str, Any]) -> Proof:
    return proof_from_dict(data)


def _record(swap_id: str, text: str, counters: str | None, unknown: bool) -> SwapRecord:
    data = json.loads(text)
    return SwapRecord(
        id=swap_id,
        kind=SwapKind(data["kind"]),
        mint=data["mint"],
        unit=data["unit"],
        keyset_id=data["keyset_id"],
        counters=tuple(int(c) for c in (counters or "").split(",") if c),
        amounts=tuple(data["amounts"]),
        inputs=tuple(proof_from_dict(p) for p in data["inputs"]),
        grant=grant_from_json(data["grant"]) if data["grant"] else None,
        unknown=unknown,
        created_at=float(data["created_at"]),
    )


def _refusal(exc: ResponseError) -> Exception:
    """The ledger's own refusals, which the scripts return as errors."""
    text = str(exc)
    if text.startswith("PAYGRESS_EXISTS"):
        return SwapExists(text)
    if text.startswith("PAYGRESS_BUSY"):
        return CountersBusy(text.removeprefix("PAYGRESS_BUSY "))
    if text.startswith("PAYGRESS_TAKEN"):
        return ProofsTaken(text.removeprefix("PAYGRESS_TAKEN "))
    if text.startswith("PAYGRESS_CLAIMED"):
        return SwapClaimed(text)
    if text.startswith("PAYGRESS_KNOWN"):
        return ProofsKnown(text.removeprefix("PAYGRESS_KNOWN "))
    if text.startswith("PAYGRESS_FULL"):
        return QueueFull(text.removeprefix("PAYGRESS_FULL "))
    return exc
