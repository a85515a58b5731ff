# Shared by every rules/*.smk file: config validation, and the functions that turn config into
# inputs and outputs. Every path comes from mrcbench/runtime/layout.py (the run layout, one file).
import os
import sys

from mrcbench import config as mrc_config
from mrcbench.errors import MrcbenchError
from mrcbench.runtime import files as mrc_files
from mrcbench.runtime import kernels as mrc_kernels
from mrcbench.runtime import layout as mrc_layout
from mrcbench.provenance import manifest as mrc_manifest
from mrcbench import supervisor as mrc_supervisor
from mrcbench.tables import STATS_TABLES

# The one validation (mrcbench.config.validate: the schema, then the cross-references it cannot
# express): it fills the schema's defaults into `config` in place, and a bad key stops the DAG with one
# line naming it.
try:
    mrc_config.validate(config, source=" + ".join(map(str, workflow.configfiles)) or "config")
except MrcbenchError as exc:
    sys.exit(f"error: {exc}")
# Every job inherits Snakemake's environment: the CPU kernels it computes with (mrcbench/runtime/kernels.py).
mrc_kernels.export(mrc_config.cpu_kernels(config))
# ... and this process: a job whose Snakemake is killed (kill -9) stops rather than renaming its results
# in after a restart (mrcbench/supervisor.py).
if (mrc_process := mrc_supervisor.token()) is not None:
    os.environ[mrc_supervisor.ENV] = mrc_process

RESULTS = mrc_layout.results_root(config)
# Logs mirror the results folder (results -> logs, results/smoke -> logs/smoke; mrc_layout.logs_root).
LOGS = mrc_layout.logs_root(RESULTS)
# The record of the config the run ran with (the config file(s) plus command-line overrides, validated),
# read by the jobs that read the whole config (stats, manifest; every other job reads its spec).
# Written when the run starts (onstart, in the Snakefile), never by a dry run or a lint.
CONFIG = mrc_layout.config_file(RESULTS)
# Digests of every result file and the environment (rules/manifest.smk, the DAG's last step).
MANIFEST = mrc_layout.manifest_file(RESULTS)
# The repository's reference manifests and the reference tables beside them (reference/default/,
# indexed by its reference.json); the report's appendix gives this run's verdict against the one made
# from its config (mrcbench compare RESULTS reference/default lists the differences).
REFERENCE_DIR = mrc_manifest.REFERENCE_DIR
REFERENCE_MANIFESTS = mrc_manifest.reference_manifests_in(REFERENCE_DIR) + mrc_manifest.reference_indexes_in(
    REFERENCE_DIR)
NAME = mrc_config.name_pattern()  # the schema's name pattern ($defs.name), the one definition
RUNS = list(mrc_config.runs(config))
MODELS = mrc_config.models(config)  # typed entries (mrcbench.config.Model)
ABLATION = mrc_config.ablation_config(config)


def check_checkpoints():
    """A checkpoint folder that exists is a finished output to Snakemake, even when a file of it was
    deleted since (model.safetensors): name it before anything runs, rather than "Nothing to be done"
    and a misleading error in the next job that loads it."""
    folders = [(mrc_layout.model_dir(RESULTS, model),) * 2 for model in MODELS]
    for run in RUNS:
        finetuned = mrc_layout.finetune_dir(RESULTS, model=run.model, train=run.train, seed=run.seed)
        folders.append((mrc_layout.checkpoint_dir(finetuned), finetuned))
    for folder, step_folder in dict(folders).items():
        if os.path.isdir(step_folder) and (problem := mrc_files.checkpoint_problem(folder)):
            sys.exit(f"error: {mrc_files.incomplete(folder, problem, step_folder)}")


check_checkpoints()


def res(rule_name, key):
    return getattr(mrc_config.resources_for(config, rule_name), key)


def path_keys(wildcards):
    """A job's wildcards as the path keys of mrcbench.runtime.layout's functions (mrcbench.tables.PATH_KEYS
    names the result column of each)."""
    return dict(wildcards.items())


def spec(rule):
    """The rule's job spec (mrcbench.config.jobs), as JSON: exactly what the job's command reads. As the
    rule's params it decides re-runs (Snakemake's params trigger); as `--spec` it is the command's input."""
    return lambda wildcards: mrc_config.job_spec(config, rule, path_keys(wildcards)).to_json()


def log_file(rule):
    """A rule's log: LOGS/RULE/JOB.log, with its job's wildcards (mrcbench.runtime.layout.RULE_JOB)."""
    return mrc_layout.log(LOGS, rule)


def benchmark_file(rule):
    return mrc_layout.benchmark(RESULTS, rule)


def split_json(split):
    return mrc_layout.split_json(RESULTS, split)


def model_dir(wildcards):
    return mrc_layout.model_dir(RESULTS, wildcards.model)


def finetune_dir(wildcards):
    return mrc_layout.finetune_dir(RESULTS, **path_keys(wildcards))


def init_finetune_dir(wildcards):
    """training.init_from: the first stage's fine-tuned folder (same model and seed), else nothing."""
    init = mrc_config.init_from(config, wildcards.model, wildcards.train)
    if init is None:
        return []
    return mrc_layout.finetune_dir(RESULTS, **{**path_keys(wildcards), "train": init})


def init_checkpoint_arg(wildcards, input):
    """The first stage's checkpoint for `mrcbench finetune --init-checkpoint`, or '' (none)."""
    return mrc_layout.checkpoint_dir(input.init) if input.init else ""


def num_layers(model):
    layers = MODELS[model].num_layers
    if layers is None:
        raise ValueError(
            f"config: models.{model}.num_layers is required when ablation.split_by_layer is true"
        )
    return int(layers)


def grid_parts(wildcards):
    """The parts of one grid: `all`, or one per layer with ablation.split_by_layer."""
    parts = ["all"]
    if ABLATION.split_by_layer:
        parts = [f"layer{layer}" for layer in range(num_layers(wildcards.model))]
    return [mrc_layout.grid_part(RESULTS, **{**path_keys(wildcards), "part": part}) for part in parts]


def run_files(stage, name, ablation_only=False):
    """One file of every configured run (config.Run) in a stage's folder."""
    return [mrc_layout.stage_path(RESULTS, stage, name, **run.keys) for run in RUNS if run.ablation or not ablation_only]


def final_outputs():
    out = []
    for run in RUNS:
        out.append(mrc_layout.predict(RESULTS, "metrics.json", **run.keys))
        if run.ablation:
            out.append(mrc_layout.attention(RESULTS, "zone_stats.parquet", **run.keys))
            out.append(mrc_layout.ablation(RESULTS, "grid.parquet", **run.keys))
    out.append(mrc_layout.stats(RESULTS, "deltas.parquet"))
    out.append(mrc_config.report_config(config).html)
    return out
