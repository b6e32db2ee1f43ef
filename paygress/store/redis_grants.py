"""The GrantStore port (the durable redeem cache) on Redis, shared by every process of a seed.

Keys (all under the gateway's hash tag, see redis_db.py):
  grants        HASH  grant id -> the grant as written at redemption (JSON)
  pool          HASH  grant id -> requests of a per_request grant that no process holds
  ends          HASH  grant id -> the end of a time grant (only ever moved later)
  live          ZSET  grant id -> its end (+inf: a per_request grant with a pool left)
  lease:<id>    HASH  process -> "held|expiry ms": what each process holds of a grant
  pod:<name>    SET   ids of the grants that reach a pod
A lease row lives until its process gives it back; its expiry only tells others whether the
holder is alive (and so worth waiting for). A row whose holder has been silent for an hour is
dropped: its unused part is forfeited, never given to anyone.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from paygress.core.model import Grant
from paygress.core.ports import Lease
from paygress.core.pricing import Mode
from paygress.store.codec import grant_from_json
from paygress.store.redis_db import RedisDatabase

LEASE = """
local pool = redis.call('HGET', KEYS[1], ARGV[1])
if not pool then return {0, 0, 0} end
pool = tonumber(pool)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local take = math.max(0, math.min(tonumber(ARGV[3]), pool))
local held = 0
local row = redis.call('HGET', KEYS[2], ARGV[2])
if row then held = tonumber(string.match(row, '^(%d+)')) end
if take > 0 then
  pool = pool - take
  redis.call('HSET', KEYS[1], ARGV[1], pool)
  if pool == 0 then redis.call('ZREM', KEYS[3], ARGV[1]) end
end
held = held + take
if held > 0 then
  redis.call('HSET', KEYS[2], ARGV[2], held .. '|' .. (now + tonumber(ARGV[4])))
end
local elsewhere = 0
local rows = redis.call('HGETALL', KEYS[2])
for i = 1, #rows, 2 do
  if rows[i] ~= ARGV[2] then
    local expiry = tonumber(string.match(rows[i + 1], '|(%d+)$'))
    if expiry > now then
      elsewhere = 1
    elseif expiry < now - 3600000 then
      redis.call('HDEL', KEYS[2], rows[i])
    end
  end
end
return {held, pool, elsewhere}
"""

GIVE_BACK = """
for i = 3, #KEYS do
  local grant = ARGV[2 * (i - 3) + 2]
  local used = tonumber(ARGV[2 * (i - 3) + 3])
  local row = redis.call('HGET', KEYS[i], ARGV[1])
  if row then
    redis.call('HDEL', KEYS[i], ARGV[1])
    local held = tonumber(string.match(row, '^(%d+)'))
    if held > used and redis.call('HEXISTS', KEYS[1], grant) == 1 then
      redis.call('HINCRBY', KEYS[1], grant, held - used)
      redis.call('ZADD', KEYS[2], '+inf', grant)
    end
  end
end
return 1
"""

SAVE_EXPIRY = """
for i = 1, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  if old and tonumber(ARGV[i + 1]) > tonumber(old) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
  end
end
return 1
"""


class RedisGrants:
    """Grants, their pools and leases, ends, and the grants of a pod."""

    def __init__(self, db: RedisDatabase, *, lease_seconds: float = 10.0) -> None:
        self.db = db
        self.holder = secrets.token_hex(8)
        self.lease_ms = int(lease_seconds * 1000)
        self._lease = db.script(LEASE)
        self._give_back = db.script(GIVE_BACK)
        self._save_expiry = db.script(SAVE_EXPIRY)
        self.k_grants, self.k_pool, self.k_ends, self.k_live = (
            db.key(name) for name in ("grants", "pool", "ends", "live")
        )

    @property
    def available(self) -> bool:
        return self.db.available

    async def get_grant(self, grant_id: str) -> Grant | None:
        [grant] = await self._grants([grant_id])
        return grant

    async def load_active_grants(self, now: float) -> list[Grant]:
        _, ids = await self.db.atomic(
            ("ZREMRANGEBYSCORE", self.k_live, "-inf", now),
            ("ZRANGEBYSCORE", self.k_live, f"({now}", "+inf"),
        )
        return [g for g in await self._grants(ids) if g is not None]

    async def grants_of_pod(self, pod: str) -> list[Grant]:
        members = self.db.key("pod", pod)
        ids = await self.db.command("SMEMBERS", members)
        return [g for g in await self._grants(sorted(ids)) if g is not None]

    async def lease(self, grant_id: str, want: int) -> Lease:
        keys = [self.k_pool, self.db.key("lease", grant_id), self.k_live]
        args: list[str | int] = [grant_id, self.holder, want, self.lease_ms]
        held, pool, elsewhere = await self.db.call(lambda: self._lease(keys, args))
        return Lease(held=int(held), pool=int(pool), elsewhere=bool(elsewhere))

    async def give_back(self, used: Mapping[str, int]) -> None:
        if not used:
            return
        keys = [self.k_pool, self.k_live, *(self.db.key("lease", g) for g in used)]
        args: list[str | int] = [self.holder]
        for grant_id, count in used.items():
            args += [grant_id, count]
        await self.db.call(lambda: self._give_back(keys, args))

    async def save_expiry(self, grants: Sequence[Grant]) -> None:
        args: list[str | float] = []
        for grant in grants:
            args += [grant.id, grant.expires_at]
        if args:
            await self.db.call(lambda: self._save_expiry([self.k_ends, self.k_live], args))

    async def _grants(self, ids: Sequence[str]) -> list[Grant | None]:
        """The grants `ids` (None where unknown), with their current pools and ends."""
        if not ids:
            return []
        texts, pools, ends = await self.db.atomic(
            *(("HMGET", key, *ids) for key in (self.k_grants, self.k_pool, self.k_ends))
        )
        grants: list[Grant | None] = []
        for text, pool, end in zip(texts, pools, ends, strict=True):
            if text is None:
                grants.append(None)
                continue
            grant = grant_from_json(text)
            if grant.mode is Mode.PER_REQUEST:
                grant.requests_left = int(pool or 0)
            elif end is not None:
                grant.expires_at = float(end)
            grants.append(grant)
        return grants
