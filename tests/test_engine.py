"""The generation engine against independent references: a naive no-cache argmax loop,
one-prompt-at-a-time decoding, and a scripted model whose every output is known."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import domtok.engine as engine_mod
from domtok.engine import Engine, SamplingParams, filter_logits
from domtok.model.gpt import GPT, GPTConfig

EOT = 256
DOMAIN_ID = 300  # "<MUL_6_9_54>" in the byte tokenizer below


class ByteTokenizer:
    """Bytes are tokens 0..255, EOT is 256, id 300 is a domain token; vocab padded to 320."""

    eot_id = EOT
    vocab_size = 320
    id_to_domain = {DOMAIN_ID: SimpleNamespace(text="<MUL_6_9_54>", value=54)}

    def encode(self, text: str) -> list[int]:
        out, rest = [], text
        while rest:  # the domain token's text is one token, the rest bytes
            if rest.startswith("<MUL_6_9_54>"):
                out.append(DOMAIN_ID)
                rest = rest[len("<MUL_6_9_54>"):]
            else:
                out.extend(rest[0].encode())
                rest = rest[1:]
        return out

    def decode(self, ids) -> str:
        text, buf = "", b""
        for i in ids:
            if i < 256:
                buf += bytes([i])
                continue
            text += buf.decode("utf-8", errors="replace")
            buf = b""
            text += {EOT: "<|endoftext|>", DOMAIN_ID: "<MUL_6_9_54>"}.get(i, "")
        return text + buf.decode("utf-8", errors="replace")


TOK = ByteTokenizer()
PROMPTS = ["User: What is 7 times 8?\nAssistant:", "Hi", "The quick brown fox", "ab"]


def tiny_gpt(seed=0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=64, vocab_size=320, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():  # larger weights than GPT-2 init: peaked, varied predictions
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def naive_greedy(model, ids, n):
    """Argmax of a full forward over the whole sequence at every step: no cache, no batch."""
    ids = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([ids]))
            nxt = int(logits[0, -1].argmax())
            ids.append(nxt)
            out.append(nxt)
    return out


PLAIN = dict(stop_on_eos=False, stop_strings=())


def test_greedy_equals_naive_loop():
    model = tiny_gpt()
    eng = Engine(model, TOK)
    gens = eng.generate(PROMPTS, SamplingParams(max_new_tokens=12, **PLAIN))
    assert [g.prompt_index for g in gens] == [0, 1, 2, 3]
    for g, p in zip(gens, PROMPTS):
        assert g.ids == naive_greedy(model, TOK.encode(p), 12)
        assert g.finish_reason == "length" and g.num_tokens == 12
        assert g.text == TOK.decode(g.ids)


def test_batched_greedy_equals_one_at_a_time():
    eng = Engine(tiny_gpt(1), TOK)
    params = SamplingParams(max_new_tokens=10, **PLAIN)
    batched = eng.generate(PROMPTS, params, batch_size=8)
    single = [eng.generate([p], params)[0] for p in PROMPTS]
    assert [g.ids for g in batched] == [g.ids for g in single]
    # id-list prompts are the same as their texts
    assert [g.ids for g in eng.generate([TOK.encode(p) for p in PROMPTS], params)] == [g.ids for g in batched]


def test_block_size_caps_generation_and_long_prompts_are_cut_from_the_left():
    from domtok.errors import DomtokError

    eng = Engine(tiny_gpt(), TOK)
    g = eng.generate(["x" * 60], SamplingParams(max_new_tokens=50, **PLAIN))[0]
    # 60 + 4 = block_size 64: the context, not the budget, stopped it
    assert g.num_tokens == 4 and g.finish_reason == "context" and g.prompt_truncated == 0
    g = eng.generate(["x" * 60], SamplingParams(max_new_tokens=4, **PLAIN))[0]
    assert g.num_tokens == 4 and g.finish_reason == "length"
    long = "".join(chr(97 + i % 26) for i in range(114))  # block_size + 50
    g = eng.generate([long], SamplingParams(max_new_tokens=8, **PLAIN))[0]
    ref = eng.generate([long[-63:]], SamplingParams(max_new_tokens=8, **PLAIN))[0]
    assert g.prompt_truncated == 51 and g.ids == ref.ids and g.finish_reason == "context" and g.num_tokens == 1
    with pytest.raises(DomtokError, match="empty"):
        eng.generate([""], SamplingParams())


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_batch_mixing_prompts_at_the_context_with_short_ones_matches_one_at_a_time(temperature):
    """The crash of issue 12: a long prompt's row finished at the context and rode along in the
    batch until compaction, its position running past block_size (IndexError in wpe)."""
    eng = Engine(tiny_gpt(), TOK)
    prompts = ["a" * 63, "b" * 64, "c" * 114] + ["hi", "ok", "yes", "no", "x", "y", "z"]
    params = SamplingParams(max_new_tokens=30, temperature=temperature, seed=3, stop_strings=(), stop_on_eos=False)
    batched = eng.generate(prompts, params, num_samples=2, batch_size=16)
    single = eng.generate(prompts, params, num_samples=2, batch_size=1)
    assert [(g.ids, g.finish_reason, g.prompt_truncated) for g in batched] == \
           [(g.ids, g.finish_reason, g.prompt_truncated) for g in single]
    by_prompt = {g.prompt_index: g for g in batched}
    assert [by_prompt[i].prompt_truncated for i in range(3)] == [0, 1, 51]
    assert all(by_prompt[i].finish_reason == "context" and by_prompt[i].num_tokens == 1 for i in range(3))
    assert all(by_prompt[i].finish_reason == "length" and by_prompt[i].num_tokens == 30 for i in range(3, 10))


# ---------------------------------------------------------------- scripted model

class ScriptedModel(torch.nn.Module):
    """Each prompt has a scripted continuation; the model predicts its next token from the
    row's whole history. The history lives in the KV cache itself (token ids written into
    `k`), so the engine's left padding, select() and compaction are what is being tested."""

    def __init__(self, scripts: dict[str, list[int]], eos=EOT):
        super().__init__()
        self.config = GPTConfig(block_size=64, vocab_size=320, n_layer=1, n_head=1, n_embd=1)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.scripts = {tuple(TOK.encode(p)): c for p, c in scripts.items()}
        self.eos = eos
        self.calls: list[tuple[int, int]] = []  # (batch, T) of every forward

    def forward(self, idx, targets=None, kv_cache=None, positions=None, key_mask=None, last_only=False):
        B, T = idx.shape
        self.calls.append((B, T))
        past = kv_cache.length
        if key_mask is None:
            key_mask = torch.ones(B, T, dtype=torch.bool)
        kv_cache.k[0, :, 0, past:past + T, 0] = idx.float()
        kv_cache.key_mask[:, past:past + T] = key_mask
        kv_cache.length = past + T
        logits = torch.zeros(B, 1, self.config.vocab_size)
        for r in range(B):
            hist = kv_cache.k[0, r, 0, :past + T, 0][kv_cache.key_mask[r, :past + T]].long().tolist()
            nxt = self.eos
            for prompt, cont in self.scripts.items():
                if tuple(hist[:len(prompt)]) == prompt:
                    k = len(hist) - len(prompt)
                    nxt = cont[k] if k < len(cont) else self.eos
            logits[r, 0, nxt] = 10.0
        return logits, None


def scripted(text: str) -> list[int]:
    return TOK.encode(text)


def test_eos_stop_strings_and_length_per_row():
    model = ScriptedModel({
        "A": scripted("bc"),  # then EOS
        "BB": scripted(" fine\nUser: more"),  # stop string
        "CCC": scripted("x" * 40),  # runs out of tokens
    })
    eng = Engine(model, TOK)
    gens = eng.generate(["A", "BB", "CCC"], SamplingParams(max_new_tokens=20))
    a, b, c = gens
    assert (a.text, a.finish_reason, a.ids) == ("bc", "eos", scripted("bc") + [EOT])
    assert (b.text, b.finish_reason) == (" fine", "stop")
    assert b.ids == scripted(" fine\nUser:")  # raw ids keep the stop string's tokens
    assert (c.text, c.finish_reason, c.num_tokens) == ("x" * 20, "length", 20)
    # without the stop rules the rows run to their budget
    gens = eng.generate(["A", "BB"], SamplingParams(max_new_tokens=6, stop_on_eos=False, stop_strings=()))
    assert gens[0].finish_reason == "length" and gens[0].ids[2] == EOT
    assert gens[1].text == " fine\n"


def test_finished_rows_are_compacted_without_changing_results(monkeypatch):
    # rows of one batch finish at 2, 5, 9, 14 ... tokens; eos_id picks a token of the scripts
    scripts = {chr(65 + i) * (1 + i % 3): scripted("y" * (2 + 3 * i) + "!" + "z" * 30) for i in range(8)}
    prompts = list(scripts)
    params = SamplingParams(max_new_tokens=40, eos_id=ord("!"), stop_strings=())

    def run(fraction, min_rows):
        monkeypatch.setattr(engine_mod, "COMPACT_FRACTION", fraction)
        monkeypatch.setattr(engine_mod, "COMPACT_MIN_ROWS", min_rows)
        model = ScriptedModel(scripts)
        gens = Engine(model, TOK).generate(prompts, params)
        return gens, sum(b for b, t in model.calls if t == 1)

    never, work_never = run(2.0, 0)
    always, work_always = run(0.0, 0)
    assert [g.ids for g in never] == [g.ids for g in always]
    for i, g in enumerate(always):
        assert g.finish_reason == "eos" and g.num_tokens == 3 + 3 * i
    # without compaction every step costs 8 rows; with it, only the rows still running
    assert work_never == 8 * (max(g.num_tokens for g in never) - 1)
    assert work_always == sum(g.num_tokens for g in always) - 8


def test_calculator_forces_the_result_and_reads_domain_tokens():
    model = ScriptedModel({
        "Q1": scripted("<<6*9=") + scripted("7 >>") + scripted(" ok"),
        "Q2": scripted("<<") + [DOMAIN_ID] + scripted("+6=") + scripted("1 >>") + scripted(" ok"),
        "Q3": scripted("<<os.system(1)=2>> ok"),  # not arithmetic: the model's text stays
    })
    eng = Engine(model, TOK)
    on = eng.generate(["Q1", "Q2", "Q3"], SamplingParams(max_new_tokens=30, calculator=True))
    assert [g.text for g in on] == ["<<6*9=54>> ok", "<<<MUL_6_9_54>+6=60>> ok", "<<os.system(1)=2>> ok"]
    assert on[1].ids[2] == DOMAIN_ID  # raw ids keep the domain token
    off = eng.generate(["Q1", "Q2"], SamplingParams(max_new_tokens=30))
    assert [g.text for g in off] == ["<<6*9=7 >> ok", "<<<MUL_6_9_54>+6=1 >> ok"]


def test_samples_share_one_prefill_and_differ_with_temperature():
    model = ScriptedModel({})
    Engine(model, TOK).generate(["one", "three"], SamplingParams(max_new_tokens=3), num_samples=4)
    prefills = [(b, t) for b, t in model.calls if t > 1]
    assert prefills == [(2, 5)]  # two unique prompts, one forward, longest is 5 tokens

    eng = Engine(tiny_gpt(2), TOK)
    params = SamplingParams(max_new_tokens=8, temperature=1.5, seed=3, **PLAIN)
    gens = eng.generate(PROMPTS[:2], params, num_samples=4)
    assert [(g.prompt_index, g.sample_index) for g in gens] == [(p, s) for p in range(2) for s in range(4)]
    assert len({tuple(g.ids) for g in gens[:4]}) > 1


def test_seed_determinism_and_batch_size_independence():
    eng = Engine(tiny_gpt(3), TOK)
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7, **PLAIN)
    a = [g.ids for g in eng.generate(PROMPTS, params, num_samples=3, batch_size=32)]
    b = [g.ids for g in eng.generate(PROMPTS, params, num_samples=3, batch_size=32)]
    c = [g.ids for g in eng.generate(PROMPTS, params, num_samples=3, batch_size=5)]
    assert a == b
    assert a == c
    other = [g.ids for g in eng.generate(PROMPTS, SamplingParams(**{**params.__dict__, "seed": 8}), num_samples=3)]
    assert other != a


def test_top_k_one_equals_greedy():
    eng = Engine(tiny_gpt(4), TOK)
    greedy = eng.generate(PROMPTS, SamplingParams(max_new_tokens=10, **PLAIN))
    topk1 = eng.generate(PROMPTS, SamplingParams(max_new_tokens=10, temperature=1.3, top_k=1, seed=5, **PLAIN))
    assert [g.ids for g in greedy] == [g.ids for g in topk1]


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    keep = lambda x: torch.isfinite(x)[0].tolist()
    assert keep(filter_logits(logits, top_k=2)) == [True, True, False, False]
    assert keep(filter_logits(logits, top_p=0.7)) == [True, True, False, False]
    assert keep(filter_logits(logits, top_p=0.8)) == [True, True, False, False]
    assert keep(filter_logits(logits, top_p=0.81)) == [True, True, True, False]
    assert keep(filter_logits(logits, top_p=0.1)) == [True, False, False, False]


# ---------------------------------------------------------------- domtok sample

def test_sample_repl_commands(monkeypatch, capsys):
    import io

    import domtok.eval.common as eval_common
    from domtok import cli
    from domtok.chat import render_prompt

    model = ScriptedModel({
        render_prompt("What?"): scripted(" 56\nUser: more"),
        render_prompt("Hi", system="Be brief."): scripted(" hello"),
    })
    monkeypatch.setattr(eval_common, "load_eval_model", lambda d, device, condition=None: (model, TOK))
    monkeypatch.setattr("sys.stdin", io.StringIO("What?\n/temp 0.5\n/greedy\n/system Be brief.\nHi\n/bogus\n/quit\nWhat?\n"))
    assert cli.main(["sample", "--model", "unused", "--interactive", "--greedy", "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["56", "temperature 0.5", "temperature 0 (greedy)", "system: 'Be brief.'", "hello",
                       "unknown command /bogus; " + __import__("domtok.sample").sample.REPL_HELP]


def test_sample_cli_on_a_saved_model_dir(tmp_path, gpt2_dir, capsys):
    import domtok.tokens.tokenizer as tokenizer_mod
    from domtok import cli
    from domtok.chat import render_prompt
    from domtok.model.checkpoint import save_model_dir

    tok = tokenizer_mod.load_tokenizer("gpt2", "mul_tokens", gpt2_dir=gpt2_dir)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=128, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32))
    save_model_dir(model, tok, tmp_path / "model")
    base = ["sample", "--model", str(tmp_path / "model"), "--question", "What is 7 times 8?",
            "--max-new-tokens", "6", "--device", "cpu"]

    def run(*extra):
        assert cli.main(base + list(extra)) == 0
        return capsys.readouterr().out

    sampled = run("--num-samples", "3", "--temperature", "1.0", "--seed", "1")
    assert sampled.count("--- sample") == 3
    assert run("--num-samples", "3", "--temperature", "1.0", "--seed", "1") == sampled
    greedy = run("--greedy")
    want = Engine(model, tok).generate([render_prompt("What is 7 times 8?")], SamplingParams(max_new_tokens=6))[0]
    assert greedy.strip() == want.text.split("User:")[0].strip()
    assert cli.main(["sample", "--model", str(tmp_path / "model")]) == 2  # no question: a clean error
