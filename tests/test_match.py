"""The document-matched arm: `match: {documents: OTHER}` reads exactly OTHER's documents in the
same order; every condition reads the same documents in the same order up to where it stops;
an unknown partner or a cycle is refused when the spec is loaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from domtok.config import ConfigError
from domtok.rundir import build_nodes, document_partner, load_spec
from domtok.train.data import TrainLoader

CONDITIONS = {"baseline": {"token_set": None}, "mul_tokens": {"token_set": "mul"},
              "mul_tokens_docs": {"token_set": "mul", "match": {"documents": "baseline"}}}
SEQ, MICRO, STEP_TOKENS, STEPS = 32, 4, 256, 40   # 8 windows a step, 40 steps: about 110 documents


def _spec(tmp_path, conditions=None):
    spec = {"name": "m", "seeds": [0], "token_set": "mul", "conditions": conditions or CONDITIONS,
            "tokenizer": {"base": "bpe-400", "sample_docs": 200},
            "prepare": {"source": "synthetic:math-web", "n_docs": 300, "val_fraction": 0.1, "shard_tokens": 20000,
                        "seed": 0, "workers": 1},
            "stages": [{"name": "pretrain", "kind": "pretrain",
                        "config": {"model": "tiny", "seq_len": SEQ, "micro_batch_size": MICRO,
                                   "tokens_per_step": STEP_TOKENS, "max_steps": STEPS, "eval_every": 0,
                                   "eval_batches": 1, "ckpt_every": 0, "progress": False}}]}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from domtok.data.prepare import prepare_condition

    tmp = tmp_path_factory.mktemp("match")
    path = _spec(tmp)
    return {c: prepare_condition(str(path), c, tmp / "data") for c in CONDITIONS}


def _loader(d):
    return TrainLoader(d, SEQ, MICRO, STEP_TOKENS // (SEQ * MICRO), seed=0)


# ---- the spec --------------------------------------------------------------------------------

def test_spec_wires_the_partner_shards(tmp_path):
    spec = load_spec(str(_spec(tmp_path)))
    nodes = {n.id: n for n in build_nodes(spec, tmp_path / "run")}
    node = nodes["mul_tokens_docs/seed0/pretrain"]
    assert node.config["match_documents"] == "baseline"
    assert [d.id for d in node.deps] == ["mul_tokens_docs/prepare", "baseline/prepare"]
    assert "match_documents" not in nodes["mul_tokens/seed0/pretrain"].config


@pytest.mark.parametrize("conditions, message", [
    ({"baseline": {}, "a": {"match": {"documents": "nobody"}}}, "names no condition"),
    ({"baseline": {}, "a": {"match": {"documents": "a"}}}, "cycle"),
    ({"baseline": {}, "a": {"match": {"documents": "b"}}, "b": {"match": {"documents": "a"}}}, "a -> b -> a"),
    ({"baseline": {}, "a": {"match": "documents"}}, "match must be"),
])
def test_spec_refuses_unknown_partner_and_cycles(tmp_path, conditions, message):
    from domtok import cli

    with pytest.raises(ConfigError, match=message):
        load_spec(str(_spec(tmp_path, conditions)))
    # `domtok run` refuses it before any node runs: exit 2 and no run directory
    assert cli.main(["run", str(tmp_path / "m.yaml"), f"runs_dir={tmp_path / 'runs'}"]) == 2
    assert not (tmp_path / "runs").exists()


def test_a_chain_ends_at_the_compute_matched_condition():
    conditions = {"baseline": {}, "a": {"match": {"documents": "b"}}, "b": {"match": {"documents": "baseline"}}}
    assert document_partner(conditions, "a") == "baseline" and document_partner(conditions, "baseline") is None


# ---- the invariants ----------------------------------------------------------------------------

def _read(loader, steps):
    """(documents read whole, the targets trained on) after `steps` steps."""
    targets = 0
    for _ in range(steps):
        targets += sum(int((y != -100).sum()) for _, y in loader.next_step())
    return loader.documents_read()[0], targets


def test_every_condition_reads_the_same_documents_in_the_same_order(shards):
    loaders = {c: _loader(d) for c, d in shards.items()}
    orders = [loader.document_order(0) for loader in loaders.values()]
    assert all(np.array_equal(orders[0], o) for o in orders[1:])
    read = {c: _read(loader, STEPS)[0] for c, loader in loaders.items()}
    assert read["mul_tokens"] > read["baseline"]  # shorter in tokens, further in the same steps
    # what each read is the first documents of that one order: the same documents up to where it stops
    for c, loader in loaders.items():
        _, ends = loader._plan(0)
        assert ends[read[c] - 1] <= STEPS * STEP_TOKENS + 1 < ends[read[c]]


def test_document_matched_reads_exactly_its_partners_documents(shards):
    partner = _loader(shards["baseline"])
    partner_docs, _ = _read(partner, STEPS)
    matched = _loader(shards["mul_tokens_docs"])
    steps = matched.document_match(shards["baseline"], STEPS)
    assert steps < STEPS  # mul's text is shorter: fewer steps for the same documents
    docs, targets = _read(matched, steps)
    assert docs == partner_docs == matched.matched_documents
    order, ends = matched._plan(0)
    assert targets == ends[docs - 1] - 1  # every token of those documents is a target once, nothing after
    assert np.array_equal(order[:docs], partner.document_order(0)[:partner_docs])
    # the last step is partial: its masked targets are exactly those past the partner's documents
    assert 0 < targets - (steps - 1) * STEP_TOKENS <= STEP_TOKENS


def test_document_matched_pretrain_summary(shards, tmp_path):
    from domtok.config import load_config
    from domtok.train.pretrain import PretrainConfig, run

    torch.set_num_threads(1)
    common = ["model=tiny", f"seq_len={SEQ}", f"micro_batch_size={MICRO}", f"tokens_per_step={STEP_TOKENS}",
              f"max_steps={STEPS}", "eval_every=0", "eval_batches=1", "ckpt_every=0", "progress=false"]
    base = run(load_config(PretrainConfig, None, [f"data_dir={shards['baseline']}", *common]), tmp_path / "b")
    matched = run(load_config(PretrainConfig, None, [f"data_dir={shards['mul_tokens_docs']}",
                                                      f"match_documents={shards['baseline']}", *common]), tmp_path / "m")
    assert matched["documents_seen"] == base["documents_seen"] == matched["match"]["documents"]
    assert matched["steps"] < base["steps"] and matched["total_flops"] < base["total_flops"]
    assert matched["total_flops"] == matched["flops_per_token"] * matched["steps"] * STEP_TOKENS
    assert base["match"] == "tokens" and np.isfinite(matched["final_train_loss"])
