"""KV cache accounting of the ``vllm_v1`` scheduler: a block pool with a null block and prefix caching.

Mirrors vLLM 0.33's ``vllm/v1/core/block_pool.py`` (``BlockPool``, ``FreeKVCacheBlockQueue``)
and ``vllm/v1/core/kv_cache_manager.py`` (``KVCacheManager.get_computed_blocks``,
``allocate_slots``, ``free``) for one full-attention KV cache group:

* ``num_gpu_blocks = N`` blocks, one is the null block: N - 1 blocks hold KV.
* Without prefix caching the pool is a counter of used blocks.
* With prefix caching every full block carries a hash of its prefix. Requests of one
  ``prefix_group`` share the hashes of the blocks that lie wholly inside their ``prefix_length``
  (the shared system prompt); every other block's hash is private to its request (its own prompt
  and output tokens). A cached block is reference-counted; when its count drops to 0 it joins the
  tail of the free queue and keeps its hash until allocation pops it from the head (LRU
  eviction). A request's blocks are freed in reverse order (its tail blocks are evicted first);
  blocks without a hash (a partial last block) go to the head instead and are reused first
  (``BlockPool.free_blocks``). A lookup returns the longest run of cached full blocks from the
  start of the request, at most ``(num_tokens - 1) // block_size`` (the last token is always
  computed, for its logits).

What is tracked block by block is only what a lookup can reach: shared-prefix blocks (hashed
at allocation, so a request admitted in the same step can hit them) and the private blocks of a
preempted request (hashed when it frees them; only it can hit them, when it resumes). All other
blocks are interchangeable: the free queue holds them as counts, a run of "cached but unreachable"
blocks (full private blocks of finished requests) or the uncached blocks at the head. Popping
from the head consumes counts and evicts the tracked blocks it meets, so the order of evictions
is exactly vLLM's while an ordinary request costs O(1) block operations.
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
        self.used = 0  # blocks not in the free queue
        self.hit_tokens = 0
        self.query_tokens = 0
        if self.caching:
            self.head_free = self.usable  # uncached free blocks at the head of the queue
            # the rest of the queue, head first: tracked block id (> 0) -> 0, or run id (< 0) -> count
            self.queue: OrderedDict[int, int] = OrderedDict()
            self._next_id = 1
            self._next_run = -1
            self.block_hash: dict[int, tuple] = {}  # tracked block -> its hash
            self.ref: dict[int, int] = {}  # tracked block -> requests holding it
            self.cached: dict[tuple, int] = {}  # hash -> the block a lookup returns (first cached)
            self.dups: dict[tuple, list[int]] = {}  # hash -> later blocks with that hash, in order
            self.req_ids: dict[int, list[int]] = {}  # tracked blocks of a request (its first positions), if any
            self.req_ncached: dict[int, int] = {}  # shared-prefix positions hashed so far

    # ------------------------------------------------------------------ views
    @property
    def num_free_blocks(self) -> int:
        """Free blocks, cached-but-unreferenced ones included (vLLM's ``get_num_free_blocks``)."""
        return self.usable - self.used

    def _num_shared(self, r: int) -> int:
        """Leading blocks of ``r`` that lie wholly inside its group's shared prefix."""
        return self.plen[r] // self.bs if self.group[r] >= 0 else 0

    # ------------------------------------------------------------------ lookups
    def lookup(self, r: int, num_tokens: int) -> list[int]:
        """Cached blocks for request ``r`` (``get_computed_blocks``); [] without caching."""
        if not self.caching:
            return []
        hits: list[int] = []
        cached = self.cached
        n_max = (num_tokens - 1) // self.bs
        nsh = min(self._num_shared(r), n_max)
        g = self.group[r]
        for j in range(nsh):
            b = cached.get((g, j))
            if b is None:
                return hits
            hits.append(b)
        priv = -1 - r
        for j in range(nsh, n_max):
            b = cached.get((priv, j))
            if b is None:
                break
            hits.append(b)
        return hits

    def num_evictable(self, hits: list[int]) -> int:
        """Hit blocks that sit in the free queue (allocating the request takes them out of it)."""
        ref = self.ref
        return sum(1 for b in hits if ref[b] == 0)

    # ------------------------------------------------------------------ allocation
    def _evict(self, b: int) -> None:
        """Block ``b`` leaves the prefix cache (popped from the free queue for reuse)."""
        h = self.block_hash.pop(b)
        del self.ref[b]
        cached, dups = self.cached, self.dups
        if cached.get(h) == b:
            lst = dups.get(h)
            if lst:
                cached[h] = lst.pop(0)
                if not lst:
                    del dups[h]
            else:
                del cached[h]
        else:
            lst = dups[h]
            lst.remove(b)
            if not lst:
                del dups[h]

    def _pop(self, n: int) -> None:
        """Take ``n`` blocks from the head of the free queue, evicting tracked ones."""
        self.used += n
        hf = self.head_free
        if n <= hf:
            self.head_free = hf - n
            return
        self.head_free = 0
        n -= hf
        queue = self.queue
        while n:
            key = next(iter(queue))
            if key > 0:
                del queue[key]
                self._evict(key)
                n -= 1
            else:
                count = queue[key]
                if count > n:
                    queue[key] = count - n
                    return
                del queue[key]
                n -= count

    def _track(self, h: tuple) -> int:
        """A new tracked block (ref 1) with hash ``h``, entered in the lookup table."""
        b = self._next_id
        self._next_id = b + 1
        self.block_hash[b] = h
        self.ref[b] = 1
        if h in self.cached:
            self.dups.setdefault(h, []).append(b)
        else:
            self.cached[h] = b
        return b

    def admit(self, r: int, hits: list[int], num_new_blocks: int, num_tokens_to_cache: int) -> None:
        """Give request ``r`` its hit blocks (touched) and ``num_new_blocks`` fresh ones."""
        if not self.caching:
            self.used += num_new_blocks
            return
        if not hits and self.group[r] < 0:  # nothing to track
            if num_new_blocks <= self.head_free:
                self.head_free -= num_new_blocks
                self.used += num_new_blocks
            else:
                self._pop(num_new_blocks)
            return
        ref, queue = self.ref, self.queue
        for b in hits:
            if ref[b] == 0:
                del queue[b]
                self.used += 1
            ref[b] += 1
        self.hit_tokens += len(hits) * self.bs
        self.req_ids[r] = list(hits)
        self.req_ncached[r] = min(len(hits), self._num_shared(r))
        self.grow(r, num_new_blocks, num_tokens_to_cache)

    def grow(self, r: int, num_new_blocks: int, num_tokens_to_cache: int) -> None:
        """Add blocks for a prefill chunk of ``r`` and hash its full shared-prefix blocks."""
        if not self.caching:
            self.used += num_new_blocks
            return
        if num_new_blocks:
            self._pop(num_new_blocks)
        if self.group[r] < 0:
            return
        start = self.req_ncached[r]
        end = min(num_tokens_to_cache // self.bs, self.plen[r] // self.bs)
        if end > start:
            ids, g = self.req_ids[r], self.group[r]
            for j in range(start, end):
                if j >= len(ids):
                    ids.append(self._track((g, j)))
            self.req_ncached[r] = end

    def grow_decoding(self, n: int) -> None:
        """``n`` decoding requests each take one block."""
        if not self.caching:
            self.used += n
        elif n:
            self._pop(n)

    def free(self, r: int, num_blocks: int, num_tokens_to_cache: int, reusable: bool = False) -> None:
        """Free request ``r``'s ``num_blocks`` blocks (``KVCacheManager.free``: tail first).

        Its full blocks among the first ``num_tokens_to_cache`` tokens are cached; ``reusable``
        (a preempted request) makes its private ones reachable by its own later lookups.
        """
        if not self.caching:
            self.used -= num_blocks
            return
        ids = self.req_ids.pop(r, None)
        if ids is None and not reusable and self.group[r] < 0:
            # nothing tracked: the full blocks join the tail run, the partial one goes to the head
            n_full = num_tokens_to_cache // self.bs
            self.used -= num_blocks
            self.head_free += num_blocks - n_full
            if n_full:
                queue = self.queue
                last = next(reversed(queue)) if queue else 0
                if last < 0:
                    queue[last] += n_full
                else:
                    queue[self._next_run] = n_full
                    self._next_run -= 1
            return
        if self.group[r] >= 0:
            self.req_ids[r] = ids
            self.grow(r, 0, num_tokens_to_cache)
            del self.req_ids[r]
        if ids is None:
            ids = []
        self.req_ncached.pop(r, None)
        end = num_tokens_to_cache // self.bs
        nid = len(ids)
        queue = self.queue
        # untracked positions nid .. num_blocks - 1, from the tail: the partial ones go to the head
        n_full = max(0, end - nid)
        self.head_free += num_blocks - nid - n_full
        if n_full:
            if reusable:
                priv = -1 - r
                for j in range(end - 1, nid - 1, -1):
                    b = self._track((priv, j))
                    self.ref[b] = 0
                    queue[b] = 0
            else:  # cached but unreachable: one run at the tail
                last = next(reversed(queue)) if queue else 0
                if last < 0:
                    queue[last] += n_full
                else:
                    run = self._next_run
                    self._next_run = run - 1
                    queue[run] = n_full
        freed = num_blocks - nid
        ref = self.ref
        for j in range(nid - 1, -1, -1):
            b = ids[j]
            k = ref[b] - 1
            ref[b] = k
            if k == 0:
                queue[b] = 0
                freed += 1
        self.used -= freed

    def hit_rate(self) -> float:
        """Prefix-cache hit tokens / queried prompt tokens (NaN when nothing was queried)."""
        return self.hit_tokens / self.query_tokens if self.query_tokens else float("nan")
