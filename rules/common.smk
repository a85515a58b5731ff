# Shared by every rules/*.smk file (config validation, and the functions that turn config into
# paths); no other file computes paths by hand.
import os
import sys

from mrcbench import config as mrc_config
from mrcbench import kernels as mrc_kernels
from mrcbench import manifest as mrc_manifest
from mrcbench.stats.tables import TABLES

# The one validation (mrcbench.config.validate: the schema, then the cross-references it cannot
# express): it fills the schema's defaults into `config` in place, and a bad key stops the DAG with one
# line naming it.
try:
    mrc_config.validate(config, source=" + ".join(map(str, workflow.configfiles)) or "config")
except mrc_config.MrcbenchError as exc:
    sys.exit(f"error: {exc}")
# Every job inherits Snakemake's environment: the CPU kernels it computes with (mrcbench/kernels.py).
mrc_kernels.export(mrc_config.cpu_kernels(config))

RESULTS = os.path.normpath(config.get("results_dir", "results"))
# Logs mirror the results folder: results -> logs, results/smoke -> logs/smoke, other -> logs/other;
# a results folder outside the working directory (absolute, or ../x) keeps its logs inside: DIR/logs.
if RESULTS == "results" or RESULTS.startswith("results/"):
    LOGS = f"logs{RESULTS[len('results'):]}"
elif os.path.isabs(RESULTS) or RESULTS.split(os.sep)[0] == os.pardir:
    LOGS = f"{RESULTS}/logs"
else:
    LOGS = f"logs/{RESULTS}"
# Every command reads this file: the config file(s) plus command-line overrides, validated.
# Written when the run starts (onstart, in the Snakefile), never by a dry run or a lint.
CONFIG = f"{RESULTS}/config.resolved.yaml"
# Digests of every result file and the environment (rules/manifest.smk, the DAG's last step).
MANIFEST = f"{RESULTS}/manifest.json"
# The repository's reference manifests; the report's appendix says whether this run matches the one
# made from its config (mrcbench compare RESULTS reference/default.json lists the differences).
REFERENCE_DIR = mrc_manifest.REFERENCE_DIR
REFERENCE_MANIFESTS = mrc_manifest.reference_manifests_in(REFERENCE_DIR)
NAME = mrc_config.name_pattern()  # the schema's name pattern ($defs.name), the one definition
RUNS = list(mrc_config.runs(config))
ABLATION = mrc_config.ablation_config(config)
# Tables written by `mrcbench stats` and read by the report (one list, in mrcbench/stats/tables.py).
STATS_TABLES = list(TABLES)


def res(rule_name, key):
    return getattr(mrc_config.resources_for(config, rule_name), key)


def model_source(model):
    """Where a model's weights come from; its training/features recipe does not change them."""
    spec = config["models"][model]
    return {key: value for key, value in spec.items() if key not in ("training", "features")}


def split_json(split):
    return f"{RESULTS}/data/{split}.json"


def model_dir(wildcards):
    return f"{RESULTS}/models/{wildcards.model}"


def finetune_dir(wildcards):
    return f"{RESULTS}/finetune/{wildcards.model}/{wildcards.train}/seed{wildcards.seed}"


def init_finetune_dir(wildcards):
    """training.init_from: the first stage's fine-tuned folder (same model and seed), else nothing."""
    init = mrc_config.init_from(config, wildcards.model, wildcards.train)
    if init is None:
        return []
    return f"{RESULTS}/finetune/{wildcards.model}/{init}/seed{wildcards.seed}"


def init_checkpoint_arg(wildcards, input):
    """The first stage's checkpoint for `mrcbench finetune --init-checkpoint`, or '' (none)."""
    return f"{input.init}/checkpoint" if input.init else ""


def num_layers(model):
    spec = config["models"][model]
    if "num_layers" not in spec:
        raise ValueError(
            f"config: models.{model}.num_layers is required when ablation.split_by_layer is true"
        )
    return int(spec["num_layers"])


def grid_parts(wildcards):
    """The parts of one grid: `all`, or one per layer with ablation.split_by_layer."""
    parts = ["all"]
    if ABLATION.split_by_layer:
        parts = [f"layer{layer}" for layer in range(num_layers(wildcards.model))]
    folder = f"{RESULTS}/ablation/{wildcards.model}/{wildcards.train}/seed{wildcards.seed}/{wildcards.eval}"
    return [f"{folder}/parts/{part}.parquet" for part in parts]


def final_outputs():
    out = []
    for run in RUNS:
        out.append(f"{RESULTS}/predict/{run.eval_dir}/metrics.json")
        if run.ablation:
            out.append(f"{RESULTS}/attention/{run.eval_dir}/zone_stats.parquet")
            out.append(f"{RESULTS}/ablation/{run.eval_dir}/grid.parquet")
    out.append(f"{RESULTS}/stats/deltas.parquet")
    out.append(mrc_config.report_config(config).html)
    return out
