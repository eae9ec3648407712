"""Pretraining: shared training helpers, the shard loader, the loop, and exact resume after SIGKILL."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from domtok.config import PRESET_DIR, load_config
from domtok.errors import DomtokError
from domtok.train import common
from domtok.train.data import TrainLoader, val_data
from domtok.train.pretrain import PretrainConfig, bits_per_byte, build_model, grad_accum_steps, run

ROOT = Path(__file__).resolve().parents[1]

# A model small enough that a step takes milliseconds on one CPU core.
TINY = ["n_layer=2", "n_head=2", "n_embd=32", "seq_len=32", "micro_batch_size=4", "tokens_per_step=256",
        "warmup_steps=5", "lr=1e-2", "min_lr=1e-3", "eval_batches=4", "progress=false"]


def tiny_docs(n: int, vocab: int, rng) -> list[np.ndarray]:
    """Documents `[EOT=0] + ids` of counting sequences (a, a+s, a+2s, ...) that a tiny model
    learns quickly, at least `n` tokens in all."""
    out, total = [], 0
    while total < n:
        length, a, s = rng.integers(10, 60), rng.integers(1, vocab - 1), rng.integers(1, 4)
        out.append(np.concatenate([[0], (a + s * np.arange(length)) % (vocab - 1) + 1]).astype(np.uint16))
        total += len(out[-1])
    return out


def val_doc_bytes(i: int, doc: np.ndarray) -> int:
    """The fixture's 'original' UTF-8 size of val document i: 2-6 bytes per token, so the bytes
    per token of a few documents differ from the split's average."""
    return (2 + i % 5) * (len(doc) - 1)


def write_tiny_shards(d: Path, n_train: int = 60_000, n_val: int = 6_000, vocab: int = 256, n_shards: int = 3,
                      seed: int = 0) -> Path:
    """Shards in `domtok prepare`'s format, written by its ShardWriter (sidecars with the
    per-document index): tiny_docs, 3 bytes per train token, val_doc_bytes, and meta.json."""
    from domtok.data.shards import ShardWriter

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n, nbytes in (("train", n_train, lambda i, doc: 3 * (len(doc) - 1)), ("val", n_val, val_doc_bytes)):
        docs = tiny_docs(n, vocab, rng)
        total = sum(len(x) for x in docs)
        w = ShardWriter(d, split, -(-total // (n_shards if split == "train" else 1)), np.uint16, "test", vocab, [])
        for i, doc in enumerate(docs):
            w.add(i, doc, nbytes(i, doc))
        w.finish(len(docs))
        t = w.totals()
        t.pop("histogram")
        splits[split] = dict(t, domain_tokens=6 if split == "train" else 0)
    meta = {"splits": splits, "vocab_size": vocab, "dtype": "uint16", "condition": "baseline", "seed": seed,
            "config_hash": "test", "eot_id": 0}
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def read_docs(d: Path, split: str) -> list[np.ndarray]:
    """A split's documents in file order, from the shards alone (EOT = 0 opens each)."""
    arr = np.concatenate([np.load(f) for f in sorted(d.glob(f"{split}_*.npy"))])
    starts = list(np.flatnonzero(arr == 0)) + [len(arr)]
    return [arr[a:b] for a, b in zip(starts, starts[1:])]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine two spinning OpenMP threads per process
    make these millisecond steps 50x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("shards"))


def cfg_for(shards: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [f"data_dir={shards}", *TINY, *extra])


# --- helpers ---------------------------------------------------------------------------------

def test_lr_schedule_warmup_cosine_floor():
    lrs = [common.lr_at(s, 1.0, 0.1, 10, 110) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warmup, never 0
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.55)  # cosine midpoint = (max + min) / 2
    assert all(a >= b for a, b in zip(lrs[10:110], lrs[11:111]))
    assert lrs[110] == lrs[119] == pytest.approx(0.1)  # the floor


def test_optimizer_decays_only_matrices():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 3))
    opt = common.configure_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {p.dim() for p in decay["params"]} == {2} and {p.dim() for p in no_decay["params"]} == {1}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_rng_state_round_trip_is_json():
    import random

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    state = json.loads(json.dumps(common.rng_state()))
    a = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    common.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_clip_gradients_returns_norm_and_clips():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    m = torch.nn.Module()
    m.p = p
    assert common.clip_gradients(m, 1.0) == pytest.approx(5.0)
    assert float(p.grad.norm()) == pytest.approx(1.0, rel=1e-5)


def test_metrics_truncate_drops_rows_after_checkpoint_and_torn_line(tmp_path):
    log = common.MetricsLogger(tmp_path)
    for s in range(1, 6):
        log.log({"step": s, "loss": float(s)})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # a line cut short by SIGKILL
    log.truncate(3)
    assert [r["step"] for r in log.rows()] == [1, 2, 3]


def test_autocast_and_dtype_on_cpu():
    assert common.resolve_dtype("auto", "cpu") == "float32"
    with pytest.raises(DomtokError):
        common.resolve_dtype("fp8", "cpu")
    # fp32: no autocast; bf16 asked for on CPU: a real CPU autocast (tests/test_compile_bf16.py
    # checks its numbers); float16 needs CUDA
    assert isinstance(common.autocast("cpu", "float32"), contextlib.nullcontext)
    with common.autocast("cpu", "bfloat16"):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with pytest.raises(DomtokError, match="float16 needs a CUDA device"):
        common.resolve_dtype("float16", "cpu")
    if torch.cuda.is_available():
        assert isinstance(common.autocast("cuda:0", "bfloat16"), torch.autocast)
    assert common.mfu(1e6, 1e5, "cpu") is None  # no MFU on CPU


# --- data loader -------------------------------------------------------------------------------

def test_loader_is_seeded_and_reads_each_document_once_per_epoch(shards):
    a = TrainLoader(shards, seq_len=32, micro_batch_size=4, grad_accum=2, seed=7)
    b = TrainLoader(shards, seq_len=32, micro_batch_size=4, grad_accum=2, seed=7)
    c = TrainLoader(shards, seq_len=32, micro_batch_size=4, grad_accum=2, seed=8)
    sa, sb, sc = a.next_step(), b.next_step(), c.next_step()
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(sa, sb))
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(sa, sc))
    x, y = sa[0]
    assert x.shape == (4, 32) and torch.equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one

    # one epoch = the documents laid end to end in one seeded order, every one of them once
    docs = read_docs(shards, "train")
    loader = TrainLoader(shards, seq_len=32, micro_batch_size=1, grad_accum=1, seed=7)
    n = loader.num_windows
    stream = np.concatenate([loader.next_step()[0][0][0].numpy() for _ in range(n)])
    assert loader.pos.epoch == 1 and loader.pos.index == 0 and loader.epoch_float() == 1.0
    order = loader.document_order(0)
    assert sorted(order.tolist()) == list(range(len(docs))) and order.tolist() != list(range(len(docs)))
    expected = np.concatenate([docs[i] for i in order])
    assert n == (len(expected) - 1) // 32 and np.array_equal(stream, expected[:n * 32])
    ends = np.cumsum([len(docs[i]) for i in order])
    whole = int((ends <= n * 32 + 1).sum())
    assert whole >= len(docs) - 1 and loader.documents_read()[0] == whole
    second = loader.document_order(1)
    assert sorted(second.tolist()) == sorted(order.tolist()) and second.tolist() != order.tolist()
    first_of_second = np.concatenate([docs[i] for i in second[:3]])
    assert np.array_equal(loader.next_step()[0][0][0].numpy(), first_of_second[:32])
    ends2 = np.cumsum([len(docs[i]) for i in second])
    assert loader.documents_read()[0] == whole + int((ends2 <= 33).sum())  # a re-read document counts again


def test_documents_read_counts_whole_documents_and_their_bytes(shards):
    loader = TrainLoader(shards, seq_len=32, micro_batch_size=2, grad_accum=2, seed=5)
    for _ in range(7):
        loader.next_step()
    order = loader.document_order(0)
    lengths = [len(d) for d in read_docs(shards, "train")]
    read = 7 * 4 * 32 + 1  # tokens covered by 28 windows of 33 tokens stepping by 32
    ends = np.cumsum([lengths[i] for i in order])
    whole = int((ends <= read).sum())
    assert whole > 10 and loader.documents_read() == (whole, sum(3 * (lengths[i] - 1) for i in order[:whole]))


def test_global_batch_is_independent_of_world_size(shards):
    one = TrainLoader(shards, seq_len=32, micro_batch_size=2, grad_accum=4, seed=3)
    ranks = [TrainLoader(shards, seq_len=32, micro_batch_size=2, grad_accum=4, seed=3, rank=r, world_size=2)
             for r in range(2)]
    for _ in range(3):
        whole = one.next_step()
        parts = [r.next_step() for r in ranks]
        # rank r takes micro-batches r, r+2: together exactly the 1-process global batch
        interleaved = [parts[m % 2][m // 2] for m in range(4)]
        assert all(torch.equal(a[0], b[0]) for a, b in zip(whole, interleaved))


def test_loader_state_resumes_exactly(shards):
    a = TrainLoader(shards, seq_len=32, micro_batch_size=4, grad_accum=2, seed=1)
    for _ in range(5):
        a.next_step()
    state = json.loads(json.dumps(a.state_dict()))
    b = TrainLoader(shards, seq_len=32, micro_batch_size=4, grad_accum=2, seed=1)
    b.load_state_dict(state)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a.next_step(), b.next_step()))
    bad = dict(state, seq_len=64)
    with pytest.raises(DomtokError, match="seq_len"):
        b.load_state_dict(bad)


def test_val_data_is_whole_documents_split_across_ranks(shards):
    whole = val_data(shards, 32, 4, 5)
    r0, r1 = val_data(shards, 32, 4, 5, rank=0, world_size=2), val_data(shards, 32, 4, 5, rank=1, world_size=2)
    assert len(whole.batches) == 5 and len(r0.batches) == 3 and len(r1.batches) == 2
    assert torch.equal(whole.batches[1][0], r1.batches[0][0]) and torch.equal(whole.batches[4][0], r0.batches[2][0])
    # the first documents that fit in 5 x 4 windows of 32 targets, whole: targets are all their
    # tokens after the first EOT, and nothing else (padding is -100)
    docs = read_docs(shards, "val")
    ends = np.cumsum([len(d) for d in docs])
    k = int((ends <= 5 * 4 * 32 + 1).sum())
    assert whole.documents == k and whole.tokens == ends[k - 1] - 1
    ys = torch.cat([y for _, y in whole.batches]).flatten()
    assert torch.equal(ys[ys != -100], torch.from_numpy(np.concatenate(docs[:k])[1:].astype(np.int64)))
    assert whole.bytes == sum(val_doc_bytes(i, d) for i, d in enumerate(docs[:k]))
    everything = val_data(shards, 32, 4, 0)
    assert everything.documents == len(docs) and everything.tokens == ends[-1] - 1


def test_bad_inputs_raise_domtok_error(tmp_path, shards):
    with pytest.raises(DomtokError, match="meta.json"):
        run(cfg_for(tmp_path), tmp_path / "out")
    with pytest.raises(DomtokError, match="data_dir"):
        run(PretrainConfig(), tmp_path / "out")
    with pytest.raises(DomtokError, match="tokens_per_step"):
        grad_accum_steps(cfg_for(shards, "tokens_per_step=1000"))
    with pytest.raises(DomtokError, match="world_size"):
        grad_accum_steps(cfg_for(shards, "tokens_per_step=128"), world_size=2)  # 1 micro-batch, 2 ranks
    with pytest.raises(DomtokError, match="block_size"):
        run(cfg_for(shards, "seq_len=512", "tokens_per_step=2048"), tmp_path / "out2")


def test_bits_per_byte_formula():
    # 2 nats/token, 1000 tokens over 4000 bytes: 2 * 1000 / (ln2 * 4000)
    assert bits_per_byte(2.0, 1000, 4000) == pytest.approx(2.0 / (4 * math.log(2)))
    assert bits_per_byte(2.0, 1000, 0) is None


def test_val_bpb_uses_the_bytes_of_the_scored_documents(shards):
    """A model with all-zero weights predicts uniformly: ln(V) nats per target, by hand. bpb =
    ln(V) * targets / (ln 2 * bytes of the scored documents), not the split's average ratio."""
    from domtok.train.pretrain import evaluate
    from domtok.utils import DistInfo

    model = build_model(cfg_for(shards), 256)
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    val = val_data(shards, 32, 4, 3)
    loss, tokens = evaluate(model, val.batches, DistInfo(0, 0, 1, "cpu", True), "cpu", "float32")
    assert loss == pytest.approx(math.log(256), rel=1e-6)
    docs = read_docs(shards, "val")
    k = int((np.cumsum([len(d) for d in docs]) <= 3 * 4 * 32 + 1).sum())
    targets = sum(len(d) for d in docs[:k]) - 1
    nbytes = sum(val_doc_bytes(i, d) for i, d in enumerate(docs[:k]))
    assert tokens == targets
    bpb = bits_per_byte(loss, tokens, val.bytes)
    assert bpb == pytest.approx(math.log(256) * targets / (math.log(2) * nbytes), rel=1e-6)
    meta = json.loads((shards / "meta.json").read_text())["splits"]["val"]
    split_average = math.log(256) * meta["tokens"] / (math.log(2) * meta["bytes"])
    assert abs(bpb - split_average) > 0.01  # what the old formula reported


# --- the loop --------------------------------------------------------------------------------

def test_pretrain_loss_falls_and_writes_outputs(shards, tmp_path, capsys):
    out = tmp_path / "run"
    # 90 steps x 256 tokens = 23k tokens of a 60k-token train split: under one epoch
    summary = run(cfg_for(shards, "max_steps=90", "eval_every=30", "ckpt_every=30", "keep_last=2"), out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 91))
    assert {"loss", "lr", "grad_norm", "tokens", "tokens_per_s", "epoch"} <= set(rows[0])
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [30, 60, 90]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    assert rows[0]["loss"] == pytest.approx(math.log(256), abs=0.3)  # starts near uniform
    assert summary["final_train_loss"] < rows[0]["loss"] - 2.0
    # bits per byte with the bytes of the scored documents
    assert evals[-1]["val_bpb"] == pytest.approx(evals[-1]["val_loss"] * summary["val_tokens"]
                                                 / (math.log(2) * summary["val_bytes"]))
    val = val_data(shards, 32, 4, 4)
    assert (summary["val_documents"], summary["val_tokens"], summary["val_bytes"]) == (val.documents, val.tokens, val.bytes)

    assert summary["tokens_trained"] == 90 * 256
    train_tokens = sum(len(d) for d in read_docs(shards, "train"))
    assert summary["unique_tokens"] == (train_tokens - 1) // 32 * 32  # windows x seq_len of one epoch
    loader = TrainLoader(shards, seq_len=32, micro_batch_size=4, grad_accum=2, seed=0)
    loader.pos = loader._advance(loader.pos, 90 * 8)
    assert (summary["documents_seen"], summary["bytes_seen"]) == loader.documents_read()
    assert 0 < summary["documents_seen"] < summary["train_documents"] == len(read_docs(shards, "train"))
    assert summary["epochs"] == pytest.approx(90 * 256 / summary["unique_tokens"])
    assert summary["total_flops"] == summary["flops_per_token"] * 90 * 256
    assert summary["domain_token_share"] == pytest.approx(6 / train_tokens)
    assert "warning" not in summary and "WARNING" not in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert not (out / "manifest.json").exists()  # the pipeline or the verb writes it (domtok.manifest)
    assert (out / "config.yaml").read_text().startswith(f"# config_hash: {summary['config_hash']}")
    # keep-last-2 checkpoints, the final model dir loads and reproduces the val loss
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000060", "step_000090"]
    from domtok.model.checkpoint import load_model

    model, _ = load_model(out / "model")
    with torch.no_grad():
        nats = sum(float(model(x, y)[1]) * int((y != -100).sum()) for x, y in val.batches)
    assert nats / val.tokens == pytest.approx(evals[-1]["val_loss"], abs=1e-5)
    # a second run into the same dir must not silently overwrite it
    with pytest.raises(DomtokError, match="--resume"):
        run(cfg_for(shards, "max_steps=90"), out, resume=False)


def test_repeated_data_is_flagged(tmp_path, capsys):
    small = write_tiny_shards(tmp_path / "small", n_train=3000, n_val=1000, n_shards=1)
    summary = run(cfg_for(small, "max_steps=20", "eval_every=0", "ckpt_every=0"), tmp_path / "run")
    assert summary["epochs"] == pytest.approx(20 * 256 / summary["unique_tokens"]) and summary["epochs"] > 1
    assert summary["unique_tokens_seen"] == summary["unique_tokens"]
    assert "repeat" in summary["warning"]
    out = capsys.readouterr().out
    assert "WARNING" in out and "epoch" in out


def _pretrain_cmd(shards: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "domtok", "pretrain", str(PRESET_DIR / "pretrain-tiny.yaml"),
            f"data_dir={shards}", *TINY, *extra, "--out", str(out)]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))


def test_sigkill_then_resume_matches_uninterrupted_bit_for_bit(shards, tmp_path):
    steps = ["max_steps=160", "eval_every=40", "ckpt_every=20", "keep_last=2", "warmup_steps=10"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_pretrain_cmd(shards, ref, *steps), check=True, env=_env(), capture_output=True)

    proc = subprocess.Popen(_pretrain_cmd(shards, killed, *steps), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = killed / "checkpoints" / "step_000040" / "COMPLETE"
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    logged = len((killed / "metrics.jsonl").read_text().splitlines())
    assert logged >= 40

    res = subprocess.run(_pretrain_cmd(shards, killed, *steps), env=_env(), capture_output=True, text=True)
    assert res.returncode == 2 and "--resume" in res.stderr  # no silent restart over checkpoints
    subprocess.run(_pretrain_cmd(shards, killed, *steps) + ["--resume"], check=True, env=_env(), capture_output=True)

    def curve(d):
        return [(r["step"], r["loss"], r["lr"], r["grad_norm"], r.get("val_loss"), r["epoch"])
                for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]

    a, b = curve(ref), curve(killed)
    assert [s for s, *_ in b] == list(range(1, 161))  # rows past the checkpoint were dropped, not duplicated
    assert a == b  # exact equality: every loss, lr, grad norm and val loss bit for bit
    from safetensors.torch import load_file

    wa, wb = load_file(ref / "model" / "model.safetensors"), load_file(killed / "model" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_preset_files_load():
    for name in ("pretrain-tiny", "pretrain-gpt2-124m-pilot", "pretrain-gpt2-124m-10b"):
        cfg = load_config(PretrainConfig, PRESET_DIR / f"{name}.yaml", ["data_dir=x"], section="pretrain")
        assert grad_accum_steps(cfg) >= 1 and cfg.max_steps > 0 and cfg.min_lr < cfg.lr
    big = load_config(PretrainConfig, PRESET_DIR / "pretrain-gpt2-124m-10b.yaml", [], section="pretrain")
    assert (big.tokens_per_step, big.max_steps, big.warmup_steps, big.lr, big.min_lr) == (524288, 19073, 715, 6e-4, 6e-5)
    assert grad_accum_steps(big, world_size=8) == 16  # micro-steps per optimizer step, 2 on each of 8 ranks


def test_end_to_end_on_prepared_shards_with_tokenizer_and_hellaswag_hook(tmp_path):
    """Real `domtok prepare` shards (trained BPE, mul tokens): bpb uses the meta's byte count of
    the uninjected text, the model dir carries the tokenizer, the HellaSwag hook is logged."""
    import domtok.data.prepare as prepare
    from domtok.model.checkpoint import load_model

    shards = tmp_path / "shards"
    prepare.run(prepare.PrepareConfig(source="synthetic:math-web", n_docs=300, tokenizer="bpe-512",
                                      bpe_sample_docs=300, condition="mul_tokens", val_docs=30), shards)
    meta = json.loads((shards / "meta.json").read_text())
    hs = tmp_path / "hellaswag.jsonl"
    hs.write_text("\n".join(json.dumps({"ctx": "Six times nine is", "endings": [" 54.", " blue", " a cat", " 7"],
                                        "label": i % 4}) for i in range(4)))
    summary = run(cfg_for(shards, "max_steps=10", "eval_every=5", "hellaswag_every=5", f"hellaswag_data={hs}",
                          "hellaswag_items=4"), tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [5, 10] and all(r["hellaswag_n"] == 4 for r in evals)
    assert all(0.0 <= r["hellaswag_acc_norm_char"] <= 1.0 for r in evals)
    # the val loss is measured on the first whole val documents; bpb uses their original bytes
    from domtok.data.prepare import val_assigner
    from domtok.data.corpus import math_web_corpus

    is_val = val_assigner(prepare.PrepareConfig(val_docs=30), 300)
    val_texts = [t for i, t in enumerate(math_web_corpus(300, 0)) if is_val(i)]
    assert summary["val_bytes"] == sum(len(t.encode()) for t in val_texts[:summary["val_documents"]])
    assert summary["final_val_bpb"] == pytest.approx(summary["final_val_loss"] * summary["val_tokens"]
                                                     / (math.log(2) * summary["val_bytes"]))
    train = meta["splits"]["train"]
    assert summary["domain_token_share"] == pytest.approx(train["domain_tokens"] / train["tokens"]) and train["domain_tokens"] > 0
    model, tok = load_model(tmp_path / "run" / "model")
    assert tok is not None and tok.condition == "mul_tokens" and model.config.vocab_size == tok.vocab_size
