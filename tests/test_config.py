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
    config["experiments"]["chinese"] = {"train": "cmrc_train", "eval": ["cmrc_dev"]}
    cfg.validate(config)
    assert cfg.experiment_models(config, "english") == ["minilm", "e5_small", "bert_base_cased"]
    assert cfg.experiment_models(config, "chinese") == ["e5_small"]


def test_recipe_precedence(default_config):
    config = copy.deepcopy(default_config)
    config["models"]["minilm"]["training"] = {"learning_rate": 5e-5}
    config["experiments"]["english"]["training"] = {"epochs": 4}
    training = cfg.training_config(config, "minilm", "squad_train")
    assert training.learning_rate == 5e-5 and training.epochs == 4
    assert training.weight_decay == 0.01  # from the file
    assert training.max_grad_norm == 1.0  # paper default


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


def test_init_from_must_name_a_first_stage_of_the_same_model():
    good = yaml.safe_load((ROOT / "config" / "large.yaml").read_text())
    good["data_dir"] = None
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


@pytest.mark.parametrize(("micro", "effective"), [(32, 16), (5, 16)])
def test_micro_batch_must_divide_the_effective_batch(default_config, micro, effective):
    bad = copy.deepcopy(default_config)
    bad["training"].update(micro_batch_size=micro, train_batch_size=effective)
    bad["models"]["minilm"]["training"].pop("train_batch_size", None)
    with pytest.raises(MrcbenchError, match=rf"micro_batch_size \({micro}\) must divide .*train_batch_size \({effective}\)"):
        cfg.validate(bad)


def test_question_longer_than_the_window_is_refused(default_config):
    bad = copy.deepcopy(default_config)
    bad["features"].update(max_seq_length=64, max_query_length=64)
    with pytest.raises(MrcbenchError, match=r"features\.max_query_length \(64\) leaves no room"):
        cfg.validate(bad)


def test_split_by_layer_needs_num_layers_at_config_time(default_config):
    bad = copy.deepcopy(default_config)
    bad["ablation"]["split_by_layer"] = True
    with pytest.raises(MrcbenchError, match=r"models\.minilm\.num_layers is required"):
        cfg.validate(bad)
    bad["models"]["minilm"]["num_layers"] = 6
    cfg.validate(bad)


def test_missing_model_package_is_found_at_config_time(default_config):
    bad = copy.deepcopy(default_config)
    bad["models"]["minilm"]["package"] = "not_a_real_model_pkg"
    with pytest.raises(MrcbenchError, match=r"models\.minilm\.package: 'not_a_real_model_pkg' is not installed"):
        cfg.validate(bad)


def _snakemake(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "MRCBENCH_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], check=False, cwd=ROOT,
                          capture_output=True, text=True, env=env)


def test_snakemake_dry_run_with_a_typo_prints_one_line_naming_the_key(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["trainig"] = {"epochs": 1}
    config["results_dir"] = str(tmp_path / "results")
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = _snakemake(["-n", "--configfile", str(path)], tmp_path)
    assert proc.returncode != 0
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert lines == [f"error: {path}: unknown key 'trainig' (see mrcbench/schemas/config.schema.json)"]


def test_absolute_results_dir_keeps_its_logs_inside_and_paths_are_quoted(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    results = tmp_path / "res ults; touch PWNED"
    config["results_dir"] = str(results)
    path = tmp_path / "abs.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = _snakemake(["-n", "-p", "--configfile", str(path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "logs//" not in out and f"'{results}/logs/prepare_data.log'" in out
    assert f"--config '{results}/config.resolved.yaml'" in out


def test_every_path_in_a_rule_shell_command_is_quoted():
    """A results folder with a space or a ';' must not split a command (Snakemake's ``:q``)."""
    import re

    unquoted = []
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for block in re.findall(r"shell:\n((?:\s+\".*\"\n)+)", smk.read_text()):
            unquoted += [f"{smk.name}: {m}" for m in re.findall(r"\{(?:input|output|params|log)[^}:]*\}", block)]
    assert unquoted == []
    assert sum(len(re.findall(r"shell:\n", smk.read_text())) for smk in (ROOT / "rules").glob("*.smk")) == 10
