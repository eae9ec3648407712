"""A Tokenizer's Hugging Face files: tokenizer.json, tokenizer_config.json, special_tokens_map.json.

`hf_tokenizer_json(tok)` is the whole tokenizer as a `tokenizers` JSON string: the base
vocabulary and merges, then every id from EOT up (EOT, padding, domain tokens) added one by one
in id order, so each lands on its layout id (`Tokenizer.layout_added_tokens`); the trained BPE
encodes with exactly this file. `write_hf_files(tok, dir)` writes the three files that
`transformers.AutoTokenizer` loads (GPT2TokenizerFast), domtok's chat template included.
"""

from __future__ import annotations

from pathlib import Path

from domtok.config import atomic_write_json, atomic_write_text
from domtok.errors import DomtokError
from domtok.tokens.bpe import EOT

HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
MODEL_MAX_LENGTH = 1024


def hf_tokenizer_json(tok) -> str:
    """The whole tokenizer `tok` (a `domtok.tokens.tokenizer.Tokenizer`) as a `tokenizers` JSON string."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors
    from tokenizers import Tokenizer as HFTokenizer

    vocab, merges = tok.base_vocab_merges()
    hf = HFTokenizer(models.BPE(vocab=dict(vocab), merges=merges, fuse_unk=False))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.post_processor = processors.ByteLevel(trim_offsets=False)
    # Added one by one in id order, so each lands on its layout id.
    for i, content, special in tok.layout_added_tokens():
        single = tok.token_set.literal and not special  # " of the" never inside " of theory"
        t = AddedToken(content, single_word=single, lstrip=False, rstrip=False, normalized=False, special=special)
        (hf.add_special_tokens if special else hf.add_tokens)([t])
        got = hf.token_to_id(content)
        if got != i:
            raise DomtokError(f"tokenizer {tok.base!r}: {content!r} landed on id {got}, not {i} "
                              f"(it collides with a base token)")
    return hf.to_str()


def write_hf_files(tok, dir) -> None:
    """Write `tok`'s tokenizer.json, tokenizer_config.json, special_tokens_map.json into `dir`.

    Loadable by `transformers.AutoTokenizer.from_pretrained(dir)` (GPT2TokenizerFast).
    Note: transformers (not domtok) maps a literal "<|endoftext|>" in text to the EOT id,
    as GPT-2's own HF tokenizer does; domtok's `encode` keeps it as text.
    `chat_template` is domtok's chat format (`domtok.chat.CHAT_TEMPLATE`), so
    `apply_chat_template` renders the prompts the models were trained on.
    """
    from domtok.chat import CHAT_TEMPLATE

    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    specials = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}
    if tok.pad_token is not None:
        specials["pad_token"] = tok.pad_token
    config = {
        "tokenizer_class": "GPT2TokenizerFast",
        "model_max_length": MODEL_MAX_LENGTH,
        "add_prefix_space": False,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        **specials,
        "added_tokens_decoder": {
            str(i): {"content": c, "lstrip": False, "rstrip": False, "normalized": False,
                     "single_word": False, "special": s}
            for i, c, s in tok.layout_added_tokens()
        },
        "domtok": {"base": tok.base, "condition": tok.condition, "token_set": tok.token_set.name},
        "chat_template": CHAT_TEMPLATE,
    }
    atomic_write_text(d / "tokenizer.json", hf_tokenizer_json(tok))
    atomic_write_json(d / "tokenizer_config.json", config)
    atomic_write_json(d / "special_tokens_map.json", specials)
