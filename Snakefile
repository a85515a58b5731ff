# mrcbench: which parts of self-attention does an extractive MRC model rely on?
# Table of contents of the workflow; every rule calls one `mrcbench` command.
from snakemake.utils import min_version

min_version("8.10")


# config.yaml is the offline default; `--configfile config/X.yaml` REPLACES it (no silent merge of
# the default's datasets and experiments into another profile).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "rules/common.smk"


# Snakemake's own report (`snakemake --report results/snakemake_report.zip`): this page, then the
# outputs flagged with report() in rules/*.smk, with their captions in rules/report/.
report: "rules/report/workflow.rst"


wildcard_constraints:
    model=NAME,
    train=NAME,
    eval=NAME,
    split=NAME,
    seed=r"\d+",
    part=r"all|layer\d+",


include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/finetune.smk"
include: "rules/predict.smk"
include: "rules/attention.smk"
include: "rules/ablation.smk"
include: "rules/stats.smk"
include: "rules/report.smk"
include: "rules/manifest.smk"


onstart:
    mrc_config.write_resolved(config, CONFIG)
    # Jobs are about to change results: an old manifest would no longer describe them (rule
    # manifest writes a new one at the end when it is a target, as in `rule all`).
    if os.path.isfile(MANIFEST):
        os.remove(MANIFEST)


# Cheap rules run where Snakemake runs, never as a cluster job: the target, the grid merge and the
# report rendering.
localrules:
    all,
    merge_grid,
    report,


rule all:
    input:
        final_outputs(),
        MANIFEST,
    default_target: True
