"""Config validation: schema errors name the bad key; cross-references are checked."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mrcbench import config as cfg
from mrcbench.errors import MrcbenchError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


@pytest.mark.parametrize("path", ["config.yaml", "config/smoke.yaml", "config/paper.yaml", "config/large.yaml"])
def test_shipped_configs_validate(path):
    if not (ROOT / path).exists():
        pytest.skip(f"{path} not present")
    config = cfg.load(ROOT / path)
    assert list(cfg.runs(config))


def test_unknown_model_in_experiment_is_named(default_config):
    bad = copy.deepcopy(default_config)
    bad["experiments"]["english"]["models"] = ["minilm", "bert_huge"]
    with pytest.raises(MrcbenchError, match=r"experiments\.english\.models: unknown model 'bert_huge'"):
        cfg.validate(bad)


def test_unknown_zone_is_named(default_config):
    bad = copy.deepcopy(default_config)
    bad["ablation"]["zones"] = ["p2q", "p2x"]
    with pytest.raises(MrcbenchError, match=r"ablation\.zones\.1: 'p2x' is not one of"):
        cfg.validate(bad)


def test_unknown_key_is_named(default_config):
    bad = copy.deepcopy(default_config)
    bad["models"]["minilm"]["sauce"] = "package"
    with pytest.raises(MrcbenchError, match=r"unknown key 'models\.minilm\.sauce'"):
        cfg.validate(bad)


def test_wrong_type_is_named(default_config):
    bad = copy.deepcopy(default_config)
    bad["training"]["epochs"] = "three"
    with pytest.raises(MrcbenchError, match=r"training\.epochs"):
        cfg.validate(bad)


def test_unknown_split_and_role_mismatch(default_config):
    bad = copy.deepcopy(default_config)
    bad["experiments"]["english"]["eval"] = ["squad_train"]
    with pytest.raises(MrcbenchError, match=r"split 'squad_train' has role train"):
        cfg.validate(bad)
    bad["experiments"]["english"]["eval"] = ["nope"]
    with pytest.raises(MrcbenchError, match=r"unknown split 'nope'"):
        cfg.validate(bad)


def test_same_model_and_train_split_twice_is_refused(default_config):
    bad = copy.deepcopy(default_config)
    bad["experiments"]["again"] = {"models": ["minilm"], "train": "squad_train", "eval": ["xquad_en"]}
    with pytest.raises(MrcbenchError, match="both fine-tune model 'minilm'"):
        cfg.validate(bad)


def test_models_default_to_train_language(default_config):
    config = copy.deepcopy(default_config)
    config["models"]["bert_base_cased"] = {"source": "hub", "id": "bert-base-cased", "languages": ["en"]}
    del config["experiments"]["english"]["models"]
    del config["experiments"]["crosslingual"]
    cfg.validate(config)
    assert cfg.experiment_models(config, "english") == ["minilm", "e5_small", "bert_base_cased"]
    assert cfg.experiment_models(config, "chinese") == ["e5_small"]


def test_recipe_precedence(default_config):
    config = copy.deepcopy(default_config)
    config["models"]["minilm"]["training"] = {"learning_rate": 5e-5}
    config["experiments"]["english"]["training"] = {"epochs": 4}
    training = cfg.training_config(config, "minilm", "squad_train")
    assert training["learning_rate"] == 5e-5 and training["epochs"] == 4
    assert training["weight_decay"] == 0.01  # from the file
    assert training["max_grad_norm"] == 1.0  # paper default


def test_data_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MRCBENCH_DATA_DIR", str(tmp_path))
    assert cfg.resolve_data_dir({"data_dir": None}) == tmp_path.resolve()
    monkeypatch.delenv("MRCBENCH_DATA_DIR")
    with pytest.raises(MrcbenchError, match="MRCBENCH_DATA_DIR"):
        cfg.resolve_data_dir({"data_dir": None})
    with pytest.raises(MrcbenchError, match="data_dir: data directory not found"):
        cfg.resolve_data_dir({"data_dir": str(tmp_path / "missing")})


def test_cli_prints_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: {}\nsplits: {}\nmodels: {}\nexperiments: {}\nablation: {zones: [p2z]}\n")
    proc = subprocess.run([sys.executable, "-m", "mrcbench.cli", "validate-config", str(bad)],
                          check=False, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr


def test_init_from_must_name_a_first_stage_of_the_same_model(default_config):
    good = copy.deepcopy(default_config)
    good["experiments"]["chinese"]["training"] = {"init_from": {"train": "squad_train"}}
    cfg.validate(good)
    assert cfg.init_from(good, "e5_small", "cmrc_train") == "squad_train"
    assert cfg.init_from(good, "e5_small", "squad_train") is None
    unknown = copy.deepcopy(good)
    unknown["experiments"]["chinese"]["training"] = {"init_from": {"train": "cmrc_dev"}}
    with pytest.raises(MrcbenchError, match=r"experiments\.chinese\.training\.init_from\.train: no experiment"):
        cfg.validate(unknown)
    cycle = copy.deepcopy(good)
    cycle["experiments"]["crosslingual"]["training"] = {"init_from": {"train": "cmrc_train"}}
    with pytest.raises(MrcbenchError, match="form a cycle"):
        cfg.validate(cycle)
    seeds = copy.deepcopy(good)
    seeds["experiments"]["chinese"]["seeds"] = [42, 7]
    with pytest.raises(MrcbenchError, match=r"seeds \[7\]"):
        cfg.validate(seeds)


@pytest.mark.parametrize("path", ["config.yaml", "config/smoke.yaml", "config/paper.yaml", "config/large.yaml"])
def test_every_xquad_dataset_is_scored_with_mlqa_in_its_language(path):
    config = cfg.load(ROOT / path)
    for name, dataset in config["datasets"].items():
        if "xquad" in name or "xquad" in str(dataset.get("local", "")):
            assert dataset["metric"] == "mlqa", name
            assert f"xquad.{dataset['language']}." in dataset["local"], name


def test_mlqa_dataset_needs_a_supported_language(default_config):
    bad = copy.deepcopy(default_config)
    bad["datasets"]["xquad_de"]["language"] = "fr"
    with pytest.raises(MrcbenchError, match=r"datasets\.xquad_de\.language: .*'fr'; supported: en es hi vi de ar zh"):
        cfg.validate(bad)
    good = copy.deepcopy(default_config)
    good["datasets"]["xquad_de"]["language"] = "th"  # our extension is accepted
    cfg.validate(good)
    assert cfg.split_metric(default_config, "xquad_zh") == "mlqa"
    assert cfg.split_language(default_config, "xquad_zh") == "zh"


def test_local_checkpoint_of_an_unsupported_architecture_is_refused(default_config, tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "xlnet"}')
    bad = copy.deepcopy(default_config)
    bad["models"]["minilm"] = {"source": "local", "path": str(tmp_path)}
    with pytest.raises(MrcbenchError, match=r"models\.minilm: model 'minilm' has model_type 'xlnet'.*supported: bert"):
        cfg.validate(bad)
    (tmp_path / "config.json").write_text('{"model_type": "deberta-v2"}')
    assert cfg.validate(bad) is bad
