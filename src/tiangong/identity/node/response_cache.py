"""Encoded answers to repeated public resolutions: the UDP hot path.

Most resolution traffic asks for the same records again and again (every scan of a product's
code resolves its identifier). Decoding the request, looking the record up and encoding the
answer costs tens of microseconds in Python; a dictionary lookup on the request's bytes and a
copy of the stored answer with the request's ids patched in costs about one. No library does this
for the Handle protocol, hence this module.

The key is the request without what varies between otherwise identical requests: the session
and request ids, the packet number and the expiration time. Only plain public resolutions are
cached: op 1, no digest wanted (RD), no certified answer (CT), one packet, an answer that fits
one packet. Every write to the node clears the cache at once (``HandleNode.listeners``), and a
watcher polls the store's change counter so writes made by another worker process on the same
store clear it within ``poll`` seconds. Entries also age out, so a resolver's cached answers
follow the TTLs of what it resolved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from tiangong.identity.handle.messages import Message
from tiangong.identity.handle.protocol import MAX_UDP_PACKET, OpCode, ResponseCode
from tiangong.identity.node.dispatch import Answerer
from tiangong.identity.node.service import HandleNode

log = logging.getLogger(__name__)

_RESOLUTION = b"\x00\x00\x00\x01"
_REQUEST = b"\x00\x00\x00\x00"
_MIN_REQUEST = 20 + 24 + 4 + 4 + 4 + 4  # envelope, header, handle length, two empty lists
NODE_ENTRY_AGE = 300.0  # a node's own answers: refreshed now and then (their expiration field)
RESOLVER_ENTRY_AGE = 5.0  # a resolver's: its own TTL cache decides for longer


def request_key(data: bytes) -> bytes | None:
    """The cache key of a cacheable request, or None."""
    if len(data) < _MIN_REQUEST or len(data) > MAX_UDP_PACKET:
        return None
    # Envelope flags: compressed, encrypted, truncated (multi-packet) are never cached.
    if data[2] & 0xE0:
        return None
    if data[20:24] != _RESOLUTION or data[24:28] != _REQUEST:
        return None
    # OpFlag bytes 28-31: CT is 0x40 of byte 28, RD is 0x80 of byte 29.
    if data[28] & 0x40 or data[29] & 0x80:
        return None
    return data[:4] + data[16:36] + data[40:]


class ResponseCache:
    """Request bytes → encoded answer, bounded, cleared on every change."""

    def __init__(self, node: Answerer, *, entries: int = 100_000, poll: float = 0.2) -> None:
        self.max_entries = entries
        self.poll = poll
        self.hits = 0
        self.stored = 0
        # OrderedDict: evicting the oldest is O(1); deleting a plain dict's first key walks
        # over every slot freed before it (21 µs per eviction at 100,000 entries, measured).
        self._entries: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self._node = node if isinstance(node, HandleNode) else None
        self._age = NODE_ENTRY_AGE if self._node is not None else RESOLVER_ENTRY_AGE
        if self._node is not None:
            self._node.listeners.append(self.clear)

    def answer(self, data: bytes) -> bytes | None:
        """The encoded answer to ``data`` with its ids, if cached and fresh."""
        if not self._entries:
            return None
        key = request_key(data)
        if key is None:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        template, expires = entry
        if expires < time.monotonic():
            del self._entries[key]
            return None
        self.hits += 1
        return template[:4] + data[4:12] + template[12:]

    def remember(self, raw: bytes, request: Message, response: Message, data: bytes) -> None:
        """Keep ``data`` (the encoded ``response`` to ``raw``) if it may answer repeats."""
        if self.max_entries <= 0 or request.header.op is not OpCode.RESOLUTION:
            return
        if response.header.response is not ResponseCode.SUCCESS:
            return
        self.remember_answer(raw, data)

    def remember_answer(self, raw: bytes, data: bytes) -> None:
        """Keep ``data``, a successful encoded answer to the resolution ``raw``, if it may."""
        key = request_key(raw)
        if key is None or len(data) > MAX_UDP_PACKET or self.max_entries <= 0:
            return
        if len(self._entries) >= self.max_entries:
            # Evict the oldest insertion: cheap, and hot records come straight back.
            self._entries.popitem(last=False)
        self._entries[key] = (data, time.monotonic() + self._age)
        self.stored += 1

    def clear(self) -> None:
        """Forget every answer (the records changed)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    async def watch(self) -> None:
        """Clear the cache when the store changes under another process's hands."""
        if self._node is None:
            return
        store = self._node.store
        seen = await store.change_counter()
        while True:
            await asyncio.sleep(self.poll)
            try:
                counter = await store.change_counter()
            except Exception:  # a store hiccup must not stop the watcher
                log.exception("reading the store's change counter failed")
                self.clear()
                continue
            if counter != seen:
                seen = counter
                self.clear()
                # Another worker may have homed or unhomed a prefix.
                await self._node.refresh_homed()
