"""The GPT-2 model, with a KV cache for generation.

Architecture exactly as OpenAI's GPT-2 (so a Hugging Face `GPT2LMHeadModel` export gives the
same logits): learned token and position embeddings, pre-LayerNorm blocks (eps 1e-5), one
fused QKV projection, causal attention through `F.scaled_dot_product_attention`, GELU with
the tanh approximation, biases on every Linear and LayerNorm, a final LayerNorm and an
output head tied to the token embedding.

Parameter names follow nanoGPT (`transformer.h.0.attn.c_attn.weight`, ...), which are the
Hugging Face names with `nn.Linear` (out, in) weights instead of HF's `Conv1D` (in, out).

The KV cache serves the generation engine: a batch of left-padded prompts is prefilled in
one call (`positions` gives each row its own position ids, `key_mask` marks the padding),
then tokens are appended one step at a time. Padding keys are remembered in the cache so no
later query ever attends to them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from domtok.gpus import peak_flops_by_name


@dataclass
class GPTConfig:
    block_size: int = 1024  # longest sequence (number of learned positions)
    vocab_size: int = 50368  # the tokenizer's padded vocab (a multiple of 64)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0


# Model sizes. The vocabulary always comes from the tokenizer: use `config_from_preset`.
PRESETS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(block_size=256, vocab_size=4096, n_layer=4, n_head=4, n_embd=128),
    "gpt2-124m": GPTConfig(block_size=1024, n_layer=12, n_head=12, n_embd=768),
    "gpt2-350m": GPTConfig(block_size=1024, n_layer=24, n_head=16, n_embd=1024),
}


def config_from_preset(name: str, vocab_size: int | None = None, **overrides) -> GPTConfig:
    """A fresh GPTConfig for a preset name, with the tokenizer's vocab size and any overrides."""
    if name not in PRESETS:
        from domtok.errors import DomtokError

        raise DomtokError(f"model preset {name!r}: unknown; choose one of {sorted(PRESETS)}")
    if vocab_size is not None:
        overrides["vocab_size"] = vocab_size
    return replace(PRESETS[name], **overrides)


class KVCache:
    """Keys and values of every layer for a batch of sequences that grow together.

    All rows share one `length` (the engine left-pads prompts so they end at the same place);
    `key_mask` remembers which cached positions are padding so they are never attended to.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        head_dim = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.key_mask = torch.zeros(batch_size, max_len, device=device, dtype=torch.bool)
        self.max_len = max_len
        self.length = 0

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def select(self, rows: torch.Tensor) -> None:
        """Keep, reorder or repeat rows in place: drop finished sequences, or turn one prefill
        into several samples (`rows = torch.tensor([0, 0, 0, 0])`)."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.k.device)
        self.k = self.k.index_select(1, rows)
        self.v = self.v.index_select(1, rows)
        self.key_mask = self.key_mask.index_select(0, rows)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # fused q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.residual_scale = True  # GPT-2 init scales residual projections
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, attn_mask=None, kv_cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if kv_cache is not None:
            # write the new keys at [length, length+T) and attend to everything so far
            start, end = kv_cache.length, kv_cache.length + T
            kv_cache.k[layer, :, :, start:end] = k
            kv_cache.v[layer, :, :, start:end] = v
            k = kv_cache.k[layer, :, :, :end].to(q.dtype)
            v = kv_cache.v[layer, :, :, :end].to(q.dtype)
        dropout_p = self.dropout if self.training else 0.0
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.residual_scale = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=1e-5)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=1e-5)
        self.mlp = MLP(config)

    def forward(self, x, attn_mask=None, kv_cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), attn_mask, kv_cache, layer)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, eps=1e-5),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        self.apply(self._init_weights)

    def _init_weights(self, module):
        # GPT-2: N(0, 0.02) everywhere, zero biases; projections that write into the residual
        # stream get std 0.02/sqrt(2*n_layer) so the stream's variance does not grow with depth.
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "residual_scale", False):
                std *= (2 * self.config.n_layer) ** -0.5
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None, kv_cache: KVCache | None = None, positions=None,
                key_mask=None, last_only: bool = False):
        """idx (B, T) -> (logits, loss).

        targets: (B, T) next-token ids, -100 = ignored; loss is the mean cross-entropy in fp32.
        kv_cache: idx is appended after the `kv_cache.length` cached positions.
        positions: (B, T) position ids per row (left-padded batches); default: consecutive
            from the cache length.
        key_mask: (B, T) bool, False for padding tokens; no query ever attends to them.
        last_only: compute logits for the last position only, (B, 1, V) (generation, scoring).
        """
        B, T = idx.shape
        past = kv_cache.length if kv_cache is not None else 0
        if kv_cache is not None and past + T > kv_cache.max_len:
            raise ValueError(f"KV cache full: {past} cached + {T} new > max_len {kv_cache.max_len}")
        if positions is None:
            if past + T > self.config.block_size:
                raise ValueError(f"sequence length {past + T} exceeds block_size {self.config.block_size}")
            positions = torch.arange(past, past + T, device=idx.device).unsqueeze(0)

        attn_mask = None  # None = plain causal attention (the fast training path)
        if kv_cache is not None or key_mask is not None:
            if key_mask is None:
                key_mask = torch.ones(B, T, dtype=torch.bool, device=idx.device)
            if kv_cache is not None:
                kv_cache.key_mask[:, past:past + T] = key_mask
                keys_ok = kv_cache.key_mask[:, :past + T]
            else:
                keys_ok = key_mask
            q_pos = torch.arange(past, past + T, device=idx.device).view(T, 1)
            k_pos = torch.arange(past + T, device=idx.device).view(1, past + T)
            causal = k_pos <= q_pos
            # a query may always see itself: padding queries then stay finite (a row with no
            # visible key would make SDPA return NaN, and NaNs would leak into the cache)
            attn_mask = (keys_ok[:, None, None, :] & causal) | (k_pos == q_pos)

        x = self.transformer.wte(idx) + self.transformer.wpe(positions)
        x = self.transformer.drop(x)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, attn_mask, kv_cache, layer)
        if kv_cache is not None:
            kv_cache.length = past + T
        x = self.transformer.ln_f(x)

        if targets is None:
            if last_only:
                x = x[:, -1:, :]
            return self.lm_head(x), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; non_embedding=True leaves out both embedding tables (Kaplan et al.)."""
        n = sum(p.numel() for p in self.parameters())  # the tied head is counted once
        if non_embedding:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), the PaLM / nanoGPT MFU convention:

            6 * (N_non_embedding + n_embd * vocab_size) + 12 * n_layer * n_embd * seq_len

        6N covers the matmuls of every weight (2 FLOPs per multiply-add forward, 4 backward),
        the output head included (the token embedding lookup costs none); the second term is
        the attention scores and weighted sum (QK^T and AV), counted for the full T x T matrix.
        """
        cfg = self.config
        T = seq_len or cfg.block_size
        n = self.num_params(non_embedding=True) + cfg.n_embd * cfg.vocab_size
        return 6 * n + 12 * cfg.n_layer * cfg.n_embd * T


def device_peak_flops(device=None) -> float | None:
    """Peak dense bf16 FLOP/s of the current CUDA device (`domtok.gpus`); None if unknown or no GPU."""
    if not torch.cuda.is_available():
        return None
    return peak_flops_by_name(torch.cuda.get_device_name(device))


def optimizer_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay matrices and embeddings (>= 2-D), never biases or LayerNorm gains."""
    params = [p for p in model.parameters() if p.requires_grad]  # tied weight appears once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
