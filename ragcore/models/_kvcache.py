"""The decode loops of :class:`ragcore.Generator`: onnxruntime sessions bound to KV buffers shared between
input and output, one batch prefilled then stepped token by token (or a drafted run of tokens at a time,
prompt lookup), and the sampling of each next token. :class:`KVCacheRunner` is the base class that holds
them; :mod:`ragcore.models.generation` has the public API on top.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List, Sequence

import numpy as np

from ._decoding import PromptLookup, RowDecoder

__all__ = ["KVCacheRunner"]


class KVCacheRunner:
    """The loops over the sessions; :class:`~ragcore.models.generation.Generator` sets the attributes they
    read (``_sess``, ``_dsess``, ``_psess``, ``_ort``, ``_tok``, ``_eos``, ``_eos_list``, ``_pad``,
    ``_vocab``, ``_kvh``, ``_hd``, ``_kv_dtype``, ``_cache_names``, ``_ort_device``, ``_pool``,
    ``prefill_chunk``, ``max_context``, ``last_timings``, ``last_tokens``)."""

    _pool: Dict[int, Any]
    last_timings: Dict[str, Any]
    last_tokens: List[int]

    def _adjust(self, logits: np.ndarray, new: List[int], min_new: int, penalty: float) -> None:
        """In place: rule out end of sequence before ``min_new`` tokens; penalise tokens already generated."""
        if len(new) < min_new:
            logits[self._eos_list] = -np.inf
        if penalty != 1.0 and new:
            seen = np.unique(np.asarray(new, dtype=np.int64))
            x = logits[seen]
            logits[seen] = np.where(x > 0, x / penalty, x * penalty)

    def _stream(self, ids, max_new, temperature, top_p, seed, stops, min_new=0, penalty=1.0,
                lookup=0) -> Iterator[str]:
        (row,) = self._decoders([ids], max_new, temperature, top_p, seed, stops, min_new, penalty)
        self.last_tokens = row.tokens
        emitted = 0
        for _ in (self._run_lookup(ids, row, lookup) if lookup else self._run([ids], [row])):
            ready = row.ready()
            if ready > emitted:
                yield row.text[emitted:ready]
                emitted = ready
        if len(row.text) > emitted:
            yield row.text[emitted:]

    def _decoders(self, rows, max_new, temperature, top_p, seed, stops, min_new, penalty) -> List[RowDecoder]:
        """One :class:`RowDecoder` per prompt, sharing one random generator (drawn from in row order)."""
        rng = np.random.default_rng(seed)

        def adjust(logits, new):
            self._adjust(logits, new, min_new, penalty)

        def pick(logits):
            return self._pick(logits, temperature, top_p, rng)

        return [RowDecoder(self._tok, self._eos, min(max_new, self.max_context - len(r)), stops, adjust, pick)
                for r in rows]

    def _run(self, rows: Sequence[Sequence[int]], decoders: Sequence[RowDecoder], batch: bool = False) -> Iterator[None]:
        """Generate for all rows in one batch: prefill, then one decode step for all rows per token until
        every row is done. Yields after each step (the decoders hold the tokens and text); the time the
        caller spends between steps is not counted as decode time. Sets ``last_timings``."""
        timings = {"prefill_s": 0.0, "decode_s": 0.0, "first_token_s": None, "prompt_tokens": sum(len(r) for r in rows),
                   "new_tokens": 0}
        if batch:
            timings["batch"] = len(rows)
        self.last_timings = timings
        if all(d.done for d in decoders):
            return
        longest = max(len(r) for r in rows)
        max_new = max(d.limit for d in decoders)
        consumer = 0.0
        t0 = time.perf_counter()
        step = self._steps(rows, min(self.max_context, longest + max_new))
        try:
            logits = next(step)
            timings["prefill_s"] = time.perf_counter() - t0
            nxt = np.full(len(rows), self._pad, dtype=np.int64)
            while True:
                for b, d in enumerate(decoders):
                    if not d.done:
                        nxt[b] = d.step(logits[b])
                if timings["first_token_s"] is None:
                    timings["first_token_s"] = time.perf_counter() - t0
                timings["new_tokens"] = sum(len(d.tokens) for d in decoders)
                t_y = time.perf_counter()
                yield
                consumer += time.perf_counter() - t_y
                if all(d.done for d in decoders):
                    break
                logits = step.send(nxt)
        finally:
            step.close()
            timings["decode_s"] = max(0.0, time.perf_counter() - t0 - timings["prefill_s"] - consumer)

    def _run_lookup(self, ids: Sequence[int], d: RowDecoder, k: int) -> Iterator[None]:
        """:meth:`_run` for one row, greedy, with prompt lookup: each step feeds the last token and up to
        ``k`` drafted ones, and keeps the drafted ones while the model's own picks (through the row's
        decoder, so stop strings, the minimum length and the repetition penalty apply as in single steps)
        equal them. Rejected positions stay in the cache past the row's length, where nothing reads them
        and the next step overwrites them."""
        timings = {"prefill_s": 0.0, "decode_s": 0.0, "first_token_s": None, "prompt_tokens": len(ids),
                   "new_tokens": 0, "steps": 0, "draft_tokens": 0, "accepted_tokens": 0}
        self.last_timings = timings
        if d.done:
            return
        drafter = PromptLookup(ids)
        consumer = 0.0
        t0 = time.perf_counter()
        step = self._steps([ids], min(self.max_context, len(ids) + d.limit), lookup=k)
        try:
            logits = next(step)
            timings["prefill_s"] = time.perf_counter() - t0
            fed: List[int] = []             # the tokens of the last step after its first: the draft
            # the draft's length adapts (the schedule of transformers' assisted generation): +2 after a step
            # that kept all of it, -1 after one that did not, between 1 and k. A rejected token costs a
            # position of a many-token pass: ~4% of a one-token step in float32, ~20% in int4 (2 threads).
            room = min(k, 2)
            while True:
                ok = 0
                for i in range(logits.shape[0]):
                    tok = d.step(logits[i])
                    if d.done or i >= len(fed) or tok != fed[i]:
                        break
                    ok += 1
                timings["accepted_tokens"] += ok
                if fed:
                    room = min(k, room + 2) if ok == len(fed) else max(1, room - 1)
                if timings["first_token_s"] is None:
                    timings["first_token_s"] = time.perf_counter() - t0
                timings["new_tokens"] = len(d.tokens)
                t_y = time.perf_counter()
                yield
                consumer += time.perf_counter() - t_y
                if d.done:
                    break
                # a draft longer than the tokens still allowed would only be computed and thrown away
                fed = drafter.draft(d.tokens, min(room, d.limit - len(d.tokens) - 1))
                timings["steps"] += 1
                timings["draft_tokens"] += len(fed)
                logits = step.send(([tok] + fed, len(ids) + len(d.tokens) - 1))
        finally:
            step.close()
            timings["decode_s"] = max(0.0, time.perf_counter() - t0 - timings["prefill_s"] - consumer)

    def _steps(self, rows: Sequence[Sequence[int]], capacity: int, lookup: int = 0):
        """A coroutine over a batch: yields the logits (batch, vocab) of each row's last prompt token, then,
        for each array of next tokens (batch,) sent in, the logits after it. With ``lookup`` (one row), a
        tuple ``(tokens, past)`` may be sent instead: up to ``lookup + 1`` tokens that follow the first
        ``past`` cached positions; it yields their logits (len(tokens), vocab), a view valid until the
        next step.

        One cache buffer per layer and kind, (batch, kv_heads, capacity, head_dim), is bound as both the
        past input and the present output: GroupQueryAttention writes the new positions in place, so a
        step copies nothing but the new token in and the logits out. Prompts of different lengths are
        right-padded; ``seqlens_k`` tells the operator each row's real length.
        """
        ort = self._ort
        B = len(rows)
        lens = np.array([len(r) for r in rows], dtype=np.int64)
        S = int(lens.max())
        # the caches: taken from the pool (a previous call's, when large enough; popped, so a concurrent
        # call never shares them) or allocated, zeroed, rounded up to 256 positions. Positions past a
        # row's length are never read, so a previous call's values there are harmless.
        cache = self._pool.pop(B, None)
        if cache is None or cache[0] < capacity:
            cache = None
            cap = min(self.max_context, -(-capacity // 256) * 256)
            shape = (B, self._kvh, cap, self._hd)
            values = []
            for _ in self._cache_names:
                if self._ort_device == "cpu":
                    values.append(ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype=self._kv_dtype)))
                else:
                    values.append(ort.OrtValue.ortvalue_from_shape_and_type(shape, self._kv_dtype, "cuda", 0))
            cache = (cap, values)
        capacity = cache[0]
        try:
            logits = np.empty((max(B, lookup + 1), self._vocab), dtype=np.float32)
            logits_value = ort.OrtValue.ortvalue_from_numpy(logits[:B])
            keep = [cache, logits_value]    # what the bound OrtValues point to stays alive with the bindings

            def bind(sess):
                bound = sess.io_binding()
                for (past, present), v in zip(self._cache_names, cache[1]):
                    bound.bind_ortvalue_input(past, v)
                    bound.bind_ortvalue_output(present, v)
                bound.bind_ortvalue_output("logits", logits_value)
                return bound

            # the prompt goes through the prefill graph when the folder has one, the steps through the
            # decode graph (int8, one row) or the model; all of them bound to the same caches and logits
            prefill_sess = self._psess or self._sess
            step_sess = self._dsess if B == 1 and self._dsess is not None else self._sess
            binding = bind(prefill_sess)
            ids = np.full((B, S), self._pad, dtype=np.int64)
            for b, r in enumerate(rows):
                ids[b, :len(r)] = r
            # one prompt in chunks of prefill_chunk positions: each chunk attends to the cache written by the
            # ones before it, so attention scores about the causal half of the (S x S) square instead of all
            # of it (onnxruntime's kernel computes the whole square, then masks it); the results are the
            # one-piece ones. A batch goes in one piece (the operator takes a chunk after a past for
            # batch size 1 only).
            C = self.prefill_chunk if self.prefill_chunk and B == 1 else S
            for s0 in range(0, S, C):
                n = min(C, S - s0)
                binding.bind_cpu_input("input_ids", np.ascontiguousarray(ids[:, s0:s0 + n]))
                binding.bind_cpu_input("seqlens_k", (lens - S + s0 + n - 1).astype(np.int32))
                binding.bind_cpu_input("total_sequence_length", np.array(s0 + n, dtype=np.int32))
                binding.bind_cpu_input("last_index", np.arange(B, dtype=np.int64) * n + lens - S + n - 1)
                prefill_sess.run_with_iobinding(binding)
            logits_b = logits[:B]
            # decode: inputs live in arrays updated in place
            if step_sess is not prefill_sess:
                binding = bind(step_sess)
            tok = np.zeros((B, 1), dtype=np.int64)
            seqlens = (lens - 1).astype(np.int32)
            total = np.zeros((), dtype=np.int32)
            step_inputs = {}
            for name, arr in (("input_ids", tok), ("seqlens_k", seqlens), ("total_sequence_length", total),
                              ("last_index", np.arange(B, dtype=np.int64))):
                step_inputs[name] = v = ort.OrtValue.ortvalue_from_numpy(arr)
                keep.append((arr, v))

            # The step inputs are edited in place and bound again before every run: a session on CUDA copies
            # a bound host input to the device when it is bound, not when it runs (onnxruntime's IOBinding),
            # so a binding made once would feed the first step's values forever. On the CPU the OrtValues
            # share the arrays' memory and a bind costs microseconds.
            def run_step(**instead):
                for name, v in step_inputs.items():
                    binding.bind_ortvalue_input(name, instead.get(name, v))
                step_sess.run_with_iobinding(binding)
            # lookup steps of n tokens: per n, input ids and positions, and a view of the logits, bound per step
            many = {}
            out = logits_b
            while True:
                nxt = yield out
                if isinstance(nxt, tuple):
                    toks, past = nxt
                    n = len(toks)
                    if not 1 <= n <= lookup + 1 or past + n > capacity:
                        raise RuntimeError(f"a step of {n} tokens after {past} does not fit (at most {lookup + 1} "
                                           f"tokens, cache of {capacity} positions)")
                    if n not in many:
                        arrs = (np.zeros((1, n), dtype=np.int64), np.arange(n, dtype=np.int64), logits[:n])
                        many[n] = arrs + tuple(ort.OrtValue.ortvalue_from_numpy(a) for a in arrs)
                    ids_n, _, out, ids_v, last_v, logits_v = many[n]
                    ids_n[0] = toks
                    seqlens[0] = past + n - 1
                    total[...] = past + n
                    binding.bind_ortvalue_output("logits", logits_v)
                    run_step(input_ids=ids_v, last_index=last_v)
                    continue
                if out is not logits_b:  # after a step of several tokens
                    binding.bind_ortvalue_output("logits", logits_value)
                out = logits_b
                if int(seqlens.max()) + 2 > capacity:
                    raise RuntimeError(f"the KV cache of {capacity} positions is full")
                tok[:, 0] = nxt
                seqlens += 1
                total[...] = int(seqlens.max()) + 1
                run_step()
        finally:
            self._pool[B] = cache       # back to the pool for the next call

    @staticmethod
    def _pick(logits: np.ndarray, temperature: float, top_p: float, rng) -> int:
        if temperature == 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / temperature
        z -= z.max()
        p = np.exp(z)
        p /= p.sum()
        if top_p < 1:
            order = np.argsort(-p, kind="stable")
            csum = np.cumsum(p[order])
            keep = order[: int(np.searchsorted(csum, top_p)) + 1]
            q = np.zeros_like(p)
            q[keep] = p[keep]
            p = q / q.sum()
        return int(rng.choice(p.shape[0], p=p))
