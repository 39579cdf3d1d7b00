"""KV cache accounting of the ``vllm_v1`` scheduler: a block pool with a null block and prefix caching.

Mirrors vLLM's ``vllm/v1/core/block_pool.py`` (``BlockPool``, ``FreeKVCacheBlockQueue``) and
``vllm/v1/core/kv_cache_manager.py`` (``KVCacheManager.get_computed_blocks``, ``allocate_slots``,
``free``) for one full-attention KV cache group:

* ``num_gpu_blocks = N`` blocks, block 0 is the null block: N - 1 blocks hold KV.
* Without prefix caching the pool is a counter of used blocks.
* With prefix caching every full block carries a hash of its prefix. Requests of one
  ``prefix_group`` share the hashes of the blocks that lie wholly inside their ``prefix_length``
  (the shared system prompt); every other block's hash is private to its request (its own prompt
  and output tokens). A cached block is reference-counted; when its count drops to 0 it joins the
  tail of the free queue but keeps its hash until allocation pops it from the head (LRU
  eviction). A request's blocks are freed in reverse order, so its tail blocks are evicted first;
  blocks without a hash (a partial last block) go to the head instead and are reused first
  (``BlockPool.free_blocks`` of vLLM 0.33).
  A lookup returns the longest run of cached full blocks from the start of the request, at most
  ``(num_tokens - 1) // block_size`` blocks (the last token is always computed, for its logits).

Private blocks of one request are interchangeable: the blocks a decoding request grows into are
popped from the queue head when allocated (that is what evicts), and get their request's hashes
only when the request frees them (nobody else can hit a private hash before that).
"""

from __future__ import annotations

from collections import OrderedDict


class KVCacheManager:
    """Blocks of one replica. Request ids are the engine's local ids.

    Args:
        num_gpu_blocks: blocks of the pool including vLLM's null block.
        block_size: tokens per block.
        enable_prefix_caching: hash full blocks and reuse them (vLLM's default).
        prefix_group, prefix_length: per-request lists (shared prefix id, -1 for none; tokens).
    """

    def __init__(self, num_gpu_blocks: int, block_size: int, enable_prefix_caching: bool,
                 prefix_group: list[int], prefix_length: list[int]) -> None:
        self.num_gpu_blocks = int(num_gpu_blocks)
        self.usable = self.num_gpu_blocks - 1
        self.bs = int(block_size)
        self.caching = bool(enable_prefix_caching)
        self.group = prefix_group
        self.plen = prefix_length
        self.used = 0  # blocks held by requests (uncaching) / not in the free queue (caching)
        self.hit_tokens = 0
        self.query_tokens = 0
        if self.caching:
            self.queue: OrderedDict[int, None] = OrderedDict((b, None) for b in range(1, self.num_gpu_blocks))
            self.block_hash: list = [None] * self.num_gpu_blocks
            self.ref = [0] * self.num_gpu_blocks
            self.cached: dict = {}  # hash -> [block ids], first one is returned by lookups
            self.req_blocks: dict[int, list[int]] = {}
            self.req_ncached: dict[int, int] = {}
            self.req_anon: dict[int, int] = {}  # blocks grown while decoding, not yet in req_blocks
            self.anon: list[int] = []

    # ------------------------------------------------------------------ views
    @property
    def num_free_blocks(self) -> int:
        """Free blocks, cached-but-unreferenced ones included (vLLM's ``get_num_free_blocks``)."""
        return self.usable - self.used

    def _key(self, r: int, j: int):
        g = self.group[r]
        if g >= 0 and (j + 1) * self.bs <= self.plen[r]:
            return (g, j)
        return (-1 - r, j)

    # ------------------------------------------------------------------ lookups
    def lookup(self, r: int, num_tokens: int) -> list[int]:
        """Cached blocks for request ``r`` (``get_computed_blocks``); [] without caching."""
        if not self.caching:
            return []
        hits = []
        cached = self.cached
        for j in range((num_tokens - 1) // self.bs):
            blocks = cached.get(self._key(r, j))
            if blocks is None:
                break
            hits.append(blocks[0])
        return hits

    def num_evictable(self, hits: list[int]) -> int:
        """Hit blocks that sit in the free queue (allocating the request takes them out of it)."""
        ref = self.ref
        return sum(1 for b in hits if ref[b] == 0)

    # ------------------------------------------------------------------ allocation
    def _pop_free(self) -> int:
        b, _ = self.queue.popitem(last=False)
        h = self.block_hash[b]
        if h is not None:  # evict: the block leaves the prefix cache
            lst = self.cached[h]
            lst.remove(b)
            if not lst:
                del self.cached[h]
            self.block_hash[b] = None
        return b

    def admit(self, r: int, hits: list[int], num_new_blocks: int) -> None:
        """Give request ``r`` its hit blocks (touched) and ``num_new_blocks`` fresh ones."""
        if not self.caching:
            self.used += num_new_blocks
            return
        ref, queue = self.ref, self.queue
        for b in hits:
            if ref[b] == 0:
                del queue[b]
                self.used += 1
            ref[b] += 1
        self.hit_tokens += len(hits) * self.bs
        blocks = list(hits)
        for _ in range(num_new_blocks):
            b = self._pop_free()
            ref[b] = 1
            blocks.append(b)
        self.used += num_new_blocks
        self.req_blocks[r] = blocks
        self.req_ncached[r] = len(hits)
        self.req_anon[r] = 0

    def grow(self, r: int, num_new_blocks: int, num_tokens_to_cache: int) -> None:
        """Append blocks for a prefill chunk of ``r`` and cache its full blocks."""
        if not self.caching:
            self.used += num_new_blocks
            return
        blocks = self.req_blocks[r]
        for _ in range(num_new_blocks):
            b = self._pop_free()
            self.ref[b] = 1
            blocks.append(b)
        self.used += num_new_blocks
        self._cache(r, num_tokens_to_cache)

    def grow_decoding(self, n: int) -> None:
        """``n`` decoding requests each take one block (which ones is booked at their free)."""
        if n and self.caching:
            anon, ref = self.anon, self.ref
            for _ in range(n):
                b = self._pop_free()
                ref[b] = 1
                anon.append(b)
        self.used += n

    def grew_decoding(self, r: int, n: int) -> None:
        """Book ``n`` blocks taken by :meth:`grow_decoding` on request ``r``."""
        if self.caching:
            self.req_anon[r] += n

    def _cache(self, r: int, num_tokens: int) -> None:
        """Hash the full blocks of ``r`` that hold its first ``num_tokens`` tokens."""
        blocks = self.req_blocks[r]
        start = self.req_ncached[r]
        end = num_tokens // self.bs
        if end <= start:
            return
        block_hash, cached = self.block_hash, self.cached
        for j in range(start, end):
            b = blocks[j]
            if block_hash[b] is None:
                h = self._key(r, j)
                block_hash[b] = h
                lst = cached.get(h)
                if lst is None:
                    cached[h] = [b]
                else:
                    lst.append(b)
        self.req_ncached[r] = end

    def free(self, r: int, num_blocks: int, num_tokens_to_cache: int) -> None:
        """Free request ``r``'s ``num_blocks`` blocks (``KVCacheManager.free``: tail first)."""
        if not self.caching:
            self.used -= num_blocks
            return
        blocks = self.req_blocks.pop(r)
        k = self.req_anon.pop(r)
        for _ in range(k):
            blocks.append(self.anon.pop())
        self.req_blocks[r] = blocks
        self._cache(r, num_tokens_to_cache)
        del self.req_blocks[r]
        del self.req_ncached[r]
        ref, queue, block_hash = self.ref, self.queue, self.block_hash
        first = []  # uncached blocks go to the head, for reuse first (vLLM >= 0.33, LIFO)
        for b in reversed(blocks):
            ref[b] -= 1
            if ref[b] == 0:
                self.used -= 1
                if block_hash[b] is None:
                    first.append(b)
                else:
                    queue[b] = None
        for b in reversed(first):
            queue[b] = None
            queue.move_to_end(b, last=False)

    def hit_rate(self) -> float:
        """Prefix-cache hit tokens / queried prompt tokens (NaN when nothing was queried)."""
        return self.hit_tokens / self.query_tokens if self.query_tokens else float("nan")
