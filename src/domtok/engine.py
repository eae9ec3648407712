"""Batched generation with a KV cache: the engine behind sampling, GSM8K, probes and GRPO.

One call to `Engine.generate` takes many prompts (texts or token ids) and returns one
`Generation` per (prompt, sample), in prompt order then sample order. Inside, rows are
decoded together in chunks of `batch_size`:

1. The chunk's unique prompts are LEFT-padded to one length and prefilled in one forward.
   Each row's position ids start at 0 at its first real token and `key_mask` hides the
   padding, so a prompt gives the same logits whatever it is batched with.
2. `KVCache.select` repeats each prefilled row once per sample: several samples of a prompt
   share one prefill.
3. Decode: one token per row per step, all rows in one forward of shape (B, 1). A row stops
   on its own -- EOS, a stop string (text is cut before it), or its token budget -- and when
   enough rows have stopped the batch is compacted (`KVCache.select` again), so finished
   rows stop costing work.

The context (the model's `block_size`) is never indexed past: a row may grow to
`block_size` tokens, prompt included, and one that gets there stops with
`finish_reason="context"` (not "length": its own budget was not spent). A prompt that leaves
no room for a single new token (`block_size` tokens or more) is cut from the LEFT to
`block_size - 1` tokens, keeping the end a model answers from; `Generation.prompt_truncated`
says how many tokens were cut, so every caller can record it per item.

Stop strings are checked on the decoded tail of the row only, and only after a token that
could complete one; nothing re-decodes the whole text per step.

Sampling: temperature 0 is greedy (argmax); otherwise logits / temperature, then top-k, then
top-p (nucleus), then one draw. Every row has its own `torch.Generator`, seeded from
(seed, prompt index, sample index), so:
  - guaranteed: the same seed, prompts and batch size give identical samples, and
  - a row's random stream does not depend on which rows share its batch, so across batch
    sizes samples agree too, up to float rounding of the logits in different batch shapes
    (exact on CPU in our tests, not promised on GPU).

Calculator (`calculator=True`): when a row's text ends with an open GSM8K annotation
`<<expr=`, the engine evaluates `expr` (domain tokens count as their values; see
`domtok.calculator`) and forces the tokens of `result>>` into that row, one per step,
through the model, so the KV cache holds exactly the text the row shows.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from domtok.calculator import evaluate, format_number, open_annotation
from domtok.errors import DomtokError


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int = 0
    stop_strings: tuple[str, ...] = ("\nUser:",)
    stop_on_eos: bool = True
    calculator: bool = False
    # extension of the contract: None = the tokenizer's eot_id; an int or a tuple of ids
    eos_id: int | tuple[int, ...] | None = None


@dataclass
class Generation:
    prompt_index: int
    sample_index: int
    ids: list[int]  # every generated id, including a final EOS or the tokens of a stop string
    text: str  # decoded ids, cut before the stop string / EOS; domain tokens stay visible
    finish_reason: str  # "eos" | "stop" | "length" (max_new_tokens) | "context" (block_size reached)
    num_tokens: int  # len(ids)
    prompt_truncated: int = 0  # tokens cut from the left of a prompt too long for the context


# A batch is compacted once this fraction of its rows has finished (and always when it is
# small): copying the cache costs about one decode step, so compacting after every single
# finished row would cost more than it saves.
COMPACT_FRACTION = 0.25
COMPACT_MIN_ROWS = 4  # a batch this small is compacted after any finished row
CALC_TAIL_TOKENS = 96  # an annotation's `<<expr=` is looked for in this many last tokens


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The seed of one (prompt, sample) row: distinct per row, stable across batchings."""
    return (seed * 1_000_003 + prompt_index * 7919 + sample_index * 104_729 + 12345) % (2**63 - 1)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the smallest top-p nucleus."""
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass;
        # the top token is always kept
        drop = (torch.cumsum(probs, dim=-1) - probs) >= top_p
        drop[..., 0] = False
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def sample_next(logits: torch.Tensor, params: SamplingParams, generators: list[torch.Generator]) -> torch.Tensor:
    """Next token per row from (B, V) logits: argmax, or one draw per row with its generator."""
    if params.temperature <= 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)])


class _Row:
    """Book-keeping of one (prompt, sample) row while it decodes."""

    __slots__ = ("prompt_index", "sample_index", "limit", "limit_reason", "ids", "forced", "finish_reason")

    def __init__(self, prompt_index: int, sample_index: int, max_new_tokens: int, room: int):
        self.prompt_index = prompt_index
        self.sample_index = sample_index
        # token budget: max_new_tokens, or the room left in the context when that is less
        self.limit = min(max_new_tokens, room)
        self.limit_reason = "length" if max_new_tokens <= room else "context"
        self.ids: list[int] = []
        self.forced: list[int] = []  # calculator tokens still to feed
        self.finish_reason: str | None = None


class Engine:
    def __init__(self, model, tokenizer, device=None, dtype=None, compile: bool = False):
        """model: a domtok GPT; device: where to run (default: the model's device);
        dtype: torch.bfloat16/float16 to autocast on CUDA, torch.bfloat16 on CPU (default: the
        model's own dtype); compile: torch.compile the one-token decode step (dynamic shapes:
        the batch shrinks and the cache grows without recompiling each step)."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        param_dtype = next(model.parameters()).dtype
        self.autocast_dtype = dtype if dtype not in (None, param_dtype) else None
        if self.autocast_dtype is not None and self.device.type != "cuda" and self.autocast_dtype != torch.bfloat16:
            raise DomtokError(f"Engine: dtype {dtype} needs CUDA (device is {self.device}); use torch.bfloat16 or "
                              "leave dtype unset on CPU")
        self._decode = torch.compile(self.model, dynamic=True) if compile else self.model
        self.cache_dtype = self.autocast_dtype or param_dtype
        self.block_size = model.config.block_size
        self.domain_values = {t.text: t.value for t in getattr(tokenizer, "id_to_domain", {}).values()}
        self._piece_cache: dict[int, str] = {}
        self._candidates: dict[str, torch.Tensor] = {}
        self._banned = self._banned_logits(model.config.vocab_size)

    def _banned_logits(self, vocab_size: int) -> torch.Tensor | None:
        """-inf on ids this condition never produces: padding, and in the baseline the reserved
        domain-token ids (DESIGN invariant 2: they never appear in the baseline). Their
        embedding rows exist only so that both conditions have the same shape."""
        tok = self.tokenizer
        if tok is None or not hasattr(tok, "n_base"):
            return None
        allowed = torch.zeros(vocab_size, dtype=torch.bool)
        allowed[: tok.n_base] = True
        if getattr(tok, "uses_domain_tokens", False):
            allowed[list(tok.id_to_domain)] = True
        if bool(allowed.all()):
            return None
        return torch.zeros(vocab_size, device=self.device).masked_fill(~allowed.to(self.device), float("-inf"))

    # ---------------------------------------------------------------- public API

    @torch.inference_mode()
    def generate(self, prompts, params: SamplingParams | None = None, num_samples: int = 1,
                 batch_size: int = 32, only=None, progress=None) -> list[Generation]:
        """Generations in prompt order, then sample order.

        `only`: generate for these prompt indices alone (a torchrun rank's share). Indices stay
        global, so a row's random stream, seeded by (seed, prompt index, sample index), is the
        same whichever process draws it. `progress(n)` is called after each chunk with its
        number of rows (a `domtok.progress.Progress.update`).
        """
        params = params or SamplingParams()
        if num_samples < 1 or batch_size < 1:
            raise DomtokError(f"generate: num_samples ({num_samples}) and batch_size ({batch_size}) must be >= 1")
        if params.max_new_tokens < 1:
            raise DomtokError(f"generate: max_new_tokens is {params.max_new_tokens}; give at least 1 "
                              "(--max-new-tokens N)")
        prompt_ids, cut = [], []
        for i, p in enumerate(prompts):
            ids, n_cut = self._prompt_ids(p, i)
            prompt_ids.append(ids)
            cut.append(n_cut)
        wanted = range(len(prompt_ids)) if only is None else sorted(set(only))
        # Longest prompts first: rows of similar length share a chunk, so little padding.
        order = sorted(wanted, key=lambda i: (-len(prompt_ids[i]), i))
        rows = [(p, s) for p in order for s in range(num_samples)]
        results: dict[tuple[int, int], Generation] = {}
        for start in range(0, len(rows), batch_size):
            for g in self._generate_chunk(prompt_ids, rows[start:start + batch_size], params):
                g.prompt_truncated = cut[g.prompt_index]
                results[(g.prompt_index, g.sample_index)] = g
            if progress is not None:
                progress(len(rows[start:start + batch_size]))
        return [results[(p, s)] for p in wanted for s in range(num_samples)]

    # ---------------------------------------------------------------- one chunk

    def _generate_chunk(self, prompt_ids: list[list[int]], chunk: list[tuple[int, int]],
                        params: SamplingParams) -> list[Generation]:
        dev = self.device
        eos = params.eos_id if params.eos_id is not None else self.tokenizer.eot_id
        eos = {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}
        stops = tuple(s for s in params.stop_strings if s)
        stop_tail = max((len(s.encode()) for s in stops), default=0) + 1  # tokens are >= 1 byte
        stop_candidates = self._candidate_mask(stops) if stops else None
        calc_candidates = self._candidate_mask(("=",)) if params.calculator else None

        # 1. prefill the chunk's unique prompts, left-padded
        uniq = list(dict.fromkeys(p for p, _ in chunk))
        lens = [len(prompt_ids[p]) for p in uniq]
        P = max(lens)
        idx = torch.zeros(len(uniq), P, dtype=torch.long)
        key_mask = torch.zeros(len(uniq), P, dtype=torch.bool)
        positions = torch.zeros(len(uniq), P, dtype=torch.long)
        for r, (p, n) in enumerate(zip(uniq, lens)):
            idx[r, P - n:] = torch.tensor(prompt_ids[p])
            key_mask[r, P - n:] = True
            positions[r, P - n:] = torch.arange(n)
        rows = [_Row(p, s, params.max_new_tokens, self.block_size - len(prompt_ids[p])) for p, s in chunk]
        max_steps = max(r.limit for r in rows)
        if max_steps <= 0:
            return [self._finish(r, "length") for r in rows]
        cache = self._new_cache(len(uniq), P + max_steps)
        with self._autocast():
            logits, _ = self.model(idx.to(dev), kv_cache=cache, positions=positions.to(dev),
                                   key_mask=key_mask.to(dev), last_only=True)
        # 2. one row per sample: repeat the prefilled rows
        repeat = torch.tensor([uniq.index(p) for p, _ in chunk], device=dev)
        if len(repeat) != len(uniq) or not torch.equal(repeat, torch.arange(len(uniq), device=dev)):
            cache.select(repeat)
            logits = logits.index_select(0, repeat)
        logits = logits[:, -1, :]
        pos = torch.tensor([len(prompt_ids[r.prompt_index]) for r in rows], device=dev)
        gens = None
        if params.temperature > 0:
            gens = [torch.Generator(device=dev).manual_seed(row_seed(params.seed, r.prompt_index, r.sample_index))
                    for r in rows]

        # 3. decode
        active = rows  # rows in the batch, in cache order (finished ones until compaction)
        done: list[_Row] = []
        while True:
            if self._banned is not None:
                logits = logits.float() + self._banned
            nxt = sample_next(logits, params, gens)
            tokens = nxt.tolist()
            forced_any = False
            for i, row in enumerate(active):
                if row.finish_reason is not None:
                    continue
                was_forced = bool(row.forced)
                if was_forced:  # the calculator's tokens replace the model's choice
                    tokens[i] = row.forced.pop(0)
                    forced_any = True
                tok = tokens[i]
                row.ids.append(tok)
                if params.stop_on_eos and tok in eos and not was_forced:
                    row.finish_reason = "eos"
                elif stop_candidates is not None and stop_candidates[tok] and self._hit_stop(row.ids, stops, stop_tail):
                    row.finish_reason = "stop"
                elif len(row.ids) >= row.limit:
                    row.finish_reason = row.limit_reason
                elif calc_candidates is not None and not row.forced and calc_candidates[tok]:
                    row.forced = self._calculator_tokens(row.ids)
            if forced_any:
                nxt = torch.tensor(tokens, device=dev)

            finished = sum(r.finish_reason is not None for r in active)
            if finished == len(active):
                done.extend(active)
                break
            if finished and (finished >= COMPACT_FRACTION * len(active) or len(active) <= COMPACT_MIN_ROWS):
                keep = [i for i, r in enumerate(active) if r.finish_reason is None]
                done.extend(r for r in active if r.finish_reason is not None)
                keep_t = torch.tensor(keep, device=dev)
                cache.select(keep_t)
                nxt, pos = nxt.index_select(0, keep_t), pos.index_select(0, keep_t)
                active = [active[i] for i in keep]
                if gens is not None:
                    gens = [gens[i] for i in keep]
            with self._autocast():
                logits, _ = self._decode(nxt.view(-1, 1), kv_cache=cache, positions=pos.view(-1, 1), last_only=True)
            logits = logits[:, -1, :]
            # A finished row rides along until the next compaction and its output is ignored;
            # its position is held inside the context so the embedding is never indexed past it.
            pos = torch.clamp(pos + 1, max=self.block_size - 1)
        return [self._finish(r, r.finish_reason, stops) for r in done]

    # ---------------------------------------------------------------- helpers

    def _finish(self, row: _Row, reason: str, stops: tuple[str, ...] = ()) -> Generation:
        ids = row.ids
        text_ids = ids[:-1] if reason == "eos" else ids
        text = self.tokenizer.decode(text_ids)
        if reason == "stop":
            cut = min((text.find(s) for s in stops if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
        return Generation(row.prompt_index, row.sample_index, list(ids), text, reason, len(ids))

    def _hit_stop(self, ids: list[int], stops: tuple[str, ...], tail: int) -> bool:
        text = self.tokenizer.decode(ids[-tail:])
        return any(s in text for s in stops)

    def _calculator_tokens(self, ids: list[int]) -> list[int]:
        """Tokens of `result>>` if the row's text now ends with an open `<<expr=`, else []."""
        expr = open_annotation(self.tokenizer.decode(ids[-CALC_TAIL_TOKENS:]))
        if expr is None:
            return []
        value = evaluate(expr, self.domain_values)
        if value is None:
            return []  # not a valid expression: let the model write its own result
        return list(self.tokenizer.encode(format_number(value) + ">>"))

    def _candidate_mask(self, strings: tuple[str, ...]) -> list[bool]:
        """For each token id: could appending it complete one of `strings`? (It must contain
        a string's last character, or be a partial UTF-8 piece that decodes to U+FFFD.)"""
        key = "\x00".join(strings)
        if key not in self._candidates:
            lasts = {s[-1] for s in strings}
            vocab = self.model.config.vocab_size
            mask = []
            for i in range(vocab):
                piece = self._piece(i)
                mask.append("\ufffd" in piece or any(c in piece for c in lasts))
            self._candidates[key] = mask
        return self._candidates[key]

    def _piece(self, token_id: int) -> str:
        try:
            return self.tokenizer.decode([token_id])
        except Exception:  # ids beyond the tokenizer's table decode to nothing
            return ""

    def _prompt_ids(self, prompt, index: int) -> tuple[list[int], int]:
        """(ids, tokens cut): a prompt with no room for one new token keeps its last
        block_size - 1 tokens."""
        ids = self._ids(prompt)
        if not ids:
            raise DomtokError(f"generate: prompt {index} is empty; give at least one token")
        cut = max(0, len(ids) - (self.block_size - 1))
        return ids[cut:], cut

    def _ids(self, x) -> list[int]:
        if isinstance(x, str):
            return list(self.tokenizer.encode(x))
        return [int(t) for t in x]

    def _new_cache(self, batch: int, max_len: int):
        from domtok.model.gpt import KVCache

        return KVCache(self.model.config, batch, max_len, device=self.device, dtype=self.cache_dtype)

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
