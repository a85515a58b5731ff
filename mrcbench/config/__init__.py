"""The one configuration: its schema and defaults, its typed sections, its runs and each job's spec.

- :mod:`~mrcbench.config.schema`: ``config.schema.json`` (every key, every default), the defaults and
  the one validator that fills them in;
- :mod:`~mrcbench.config.sections`: typed, frozen sections and named entries, and their accessors;
- :mod:`~mrcbench.config.runs`: experiments as runs, and the merged recipe of one fine-tuning;
- :mod:`~mrcbench.config.checks`: the cross-reference checks the schema cannot express;
- :mod:`~mrcbench.config.loading`: ``load`` a file, ``validate`` a config (once per process), write the
  run's record;
- :mod:`~mrcbench.config.jobs`: what each job reads, its spec (the rule's params, the command's input);
- :mod:`~mrcbench.config.command`: ``mrcbench validate-config``.

This module is the package's front door: the names below are the public API.
"""
from mrcbench.config import schema
from mrcbench.config.jobs import (
    JOBS,
    AblateJob,
    EvalJob,
    ExtractJob,
    FinetuneJob,
    Job,
    MergeGridJob,
    PredictJob,
    PrepareDataJob,
    PrepareModelJob,
    Recipe,
    job_spec,
)
from mrcbench.config.loading import MAX_CONFIG_VALUES, load, validate, write_resolved
from mrcbench.config.runs import (
    Run,
    experiment_models,
    experiment_of,
    features_config,
    init_from,
    runs,
    training_config,
)
from mrcbench.config.schema import MAX_MESSAGE, defaults, fill_defaults, name_pattern
from mrcbench.config.sections import (
    MIN_SPECIAL_TOKENS,
    Ablation,
    ArticleSplit,
    Attention,
    Dataset,
    Decoding,
    Experiment,
    Features,
    Inference,
    Model,
    Report,
    Resources,
    Split,
    Stats,
    Training,
    Validation,
    ablates,
    ablation_config,
    as_model,
    attention_config,
    cpu_kernels,
    datasets,
    decoding_config,
    deep_merge,
    experiment_seeds,
    experiments,
    global_features,
    inference_config,
    models,
    passage_room,
    report_config,
    resolve_data_dir,
    resources_for,
    sample_seed,
    split_language,
    split_metric,
    splits,
    stats_config,
    validation_config,
)

__all__ = [
    "JOBS", "MAX_CONFIG_VALUES", "MAX_MESSAGE", "MIN_SPECIAL_TOKENS",
    "AblateJob", "Ablation", "ArticleSplit", "Attention", "Dataset", "Decoding", "EvalJob", "Experiment",
    "ExtractJob", "Features", "FinetuneJob", "Inference", "Job", "MergeGridJob", "Model", "PredictJob",
    "PrepareDataJob", "PrepareModelJob", "Recipe", "Report", "Resources", "Run", "Split", "Stats", "Training",
    "Validation",
    "ablates", "ablation_config", "as_model", "attention_config", "cpu_kernels", "datasets", "decoding_config",
    "deep_merge", "defaults", "experiment_models", "experiment_of", "experiment_seeds", "experiments",
    "features_config", "fill_defaults", "global_features", "inference_config", "init_from", "job_spec", "load",
    "models", "name_pattern", "passage_room", "report_config", "resolve_data_dir", "resources_for", "runs",
    "sample_seed", "schema", "split_language", "split_metric", "splits", "stats_config", "training_config",
    "validate", "validation_config", "write_resolved",
]
