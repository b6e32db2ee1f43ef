"""NUT-13 deterministic secrets and blinding factors from a BIP39 mnemonic.

Keyset ids starting with ``00`` (v1) use the legacy BIP32 path
``m/129372'/0'/{keyset_int}'/{counter}'/{0|1}``; ids starting with ``01`` (v2, 33 bytes)
use ``HMAC-SHA256(seed, "Cashu_KDF_HMAC_SHA256" || id || counter_be64 || {00|01})``,
exactly like nutshell 0.21 ``wallet/secrets.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from coincurve import PrivateKey
from mnemonic import Mnemonic

from paygress.cashu.crypto import SECP256K1_N

__all__ = ["Seed"]

_HARDENED = 0x80000000
_HMAC_KDF_DOMAIN = b"Cashu_KDF_HMAC_SHA256"
_V1_ID = re.compile(r"00[0-9a-f]{14}")
_V2_ID = re.compile(r"01[0-9a-f]{64}")


class _Node:
    """A BIP32 extended private key (secret scalar + chain code)."""

    __slots__ = ("chain", "key")

    def __init__(self, key: bytes, chain: bytes) -> None:
        self.key = key
        self.chain = chain

    @classmethod
    def master(cls, seed: bytes) -> _Node:
        digest = hmac.new(b"Bitcoin seed", seed, hashlib.sha512).digest()
        return cls._checked(digest[:32], digest[32:])

    @classmethod
    def _checked(cls, key: bytes, chain: bytes) -> _Node:
        if not 0 < int.from_bytes(key, "big") < SECP256K1_N:
            raise ValueError("BIP32 derivation produced an invalid key")  # pragma: no cover
        return cls(key, chain)

    def child(self, index: int) -> _Node:
        """CKDpriv: hardened when ``index >= 2**31``."""
        if index >= _HARDENED:
            data = b"\x00" + self.key + index.to_bytes(4, "big")
        else:
            pub = PrivateKey(self.key).public_key.format(compressed=True)
            data = pub + index.to_bytes(4, "big")
        digest = hmac.new(self.chain, data, hashlib.sha512).digest()
        tweak = int.from_bytes(digest[:32], "big")
        if tweak >= SECP256K1_N:
            raise ValueError("BIP32 derivation produced an invalid key")  # pragma: no cover
        child_key = (tweak + int.from_bytes(self.key, "big")) % SECP256K1_N
        return self._checked(child_key.to_bytes(32, "big"), digest[32:])


class Seed:
    """A wallet seed (64-byte BIP39 seed). ``repr`` never shows key material."""

    __slots__ = ("_keyset_nodes", "_master", "_seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) < 16:
            raise ValueError("seed must be at least 16 bytes")
        self._seed = bytes(seed)
        self._master: _Node | None = None
        self._keyset_nodes: dict[int, _Node] = {}

    def __repr__(self) -> str:
        return "Seed(<hidden>)"

    @classmethod
    def from_mnemonic(cls, words: str, passphrase: str = "") -> Seed:
        """Build from a BIP39 English mnemonic (case and extra whitespace are ignored)."""
        normalized = " ".join(words.lower().split())
        mnemo = Mnemonic("english")
        try:
            valid = mnemo.check(normalized)
        except (ValueError, LookupError):
            valid = False
        if not valid:
            raise ValueError(
                "invalid BIP39 mnemonic: expected 12-24 English words with a valid checksum"
            )
        return cls(Mnemonic.to_seed(normalized, passphrase))

    @staticmethod
    def generate_mnemonic() -> str:
        """A fresh random 12-word English BIP39 mnemonic."""
        return str(Mnemonic("english").generate(strength=128))

    def purpose_key(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose: HMAC-SHA256(seed, b"paygress/" + purpose).

        Every replica of one seed derives the same key; a key of one purpose says nothing of
        another's, nor of the seed (HMAC is a PRF keyed by the seed).
        """
        return hmac.new(self._seed, b"paygress/" + purpose.encode(), hashlib.sha256).digest()

    def derive(self, keyset_id: str, counter: int) -> tuple[str, bytes]:
        """Return ``(secret_hex, r)`` for ``counter`` on the (full) ``keyset_id``."""
        if isinstance(counter, bool) or not isinstance(counter, int) or counter < 0:
            raise ValueError("counter must be a non-negative integer")
        if _V2_ID.fullmatch(keyset_id):
            return self._derive_hmac(keyset_id, counter)
        if _V1_ID.fullmatch(keyset_id):
            return self._derive_bip32(keyset_id, counter)
        raise ValueError(
            "unsupported keyset id: need lowercase hex, 16 chars for '00' or 66 for '01'"
        )

    def _derive_hmac(self, keyset_id: str, counter: int) -> tuple[str, bytes]:
        if counter >= 2**64:
            raise ValueError("counter out of range")
        base = _HMAC_KDF_DOMAIN + bytes.fromhex(keyset_id) + counter.to_bytes(8, "big")
        secret = hmac.new(self._seed, base + b"\x00", hashlib.sha256).digest()
        r_int = int.from_bytes(hmac.new(self._seed, base + b"\x01", hashlib.sha256).digest(), "big")
        r_int %= SECP256K1_N
        if r_int == 0:
            raise ValueError("derived blinding factor is zero")  # pragma: no cover
        return secret.hex(), r_int.to_bytes(32, "big")

    def _derive_bip32(self, keyset_id: str, counter: int) -> tuple[str, bytes]:
        if counter >= _HARDENED:
            raise ValueError("counter out of range for BIP32 derivation")
        keyset_int = int(keyset_id, 16) % (2**31 - 1)
        node = self._keyset_nodes.get(keyset_int)
        if node is None:
            if self._master is None:
                self._master = _Node.master(self._seed)
            node = self._master.child(_HARDENED + 129372).child(_HARDENED)
            node = node.child(_HARDENED + keyset_int)
            self._keyset_nodes[keyset_int] = node
        coin = node.child(_HARDENED + counter)
        return coin.child(0).key.hex(), coin.child(1).key
