# Attention-zone ablation: the zone x layer (x head) grid of per-question EM/F1. One job per
# (model, train split, seed, eval split); with ablation.split_by_layer (clusters), one job per
# layer plus a merge rule.

ABLATE_SHELL = (
    "mrcbench ablate --config {CONFIG} --model {wildcards.model} --train {wildcards.train}"
    " --seed {wildcards.seed} --eval {wildcards.eval} --checkpoint {input.finetuned}/checkpoint"
    " --eval-json {input.eval} --out {output}"
)
GRID = f"{RESULTS}/ablation/{{model}}/{{train}}/seed{{seed}}/{{eval}}/grid.parquet"


if not ABLATION["split_by_layer"]:

    rule ablate:
        input:
            finetuned=finetune_dir,
            eval=lambda wc: split_json(wc.eval),
        output:
            GRID,
        params:
            features=lambda wc: mrc_config.features_config(config, wc.model, wc.train),
            decoding=mrc_config.decoding_config(config),
            ablation=ABLATION,
        log:
            f"{LOGS}/ablate/{{model}}/{{train}}/seed{{seed}}/{{eval}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/ablate/{{model}}/{{train}}/seed{{seed}}/{{eval}}.tsv"
        threads: lambda wc: res("ablate", "threads")
        resources:
            mem_mb=lambda wc: res("ablate", "mem_mb"),
            runtime=lambda wc: res("ablate", "runtime"),
            gpu=lambda wc: res("ablate", "gpu"),
        shell:
            ABLATE_SHELL + " > {log} 2>&1"

else:

    rule ablate_layer:
        input:
            finetuned=finetune_dir,
            eval=lambda wc: split_json(wc.eval),
        output:
            f"{RESULTS}/ablation/{{model}}/{{train}}/seed{{seed}}/{{eval}}/parts/layer{{layer}}.parquet",
        params:
            features=lambda wc: mrc_config.features_config(config, wc.model, wc.train),
            decoding=mrc_config.decoding_config(config),
            ablation=ABLATION,
        log:
            f"{LOGS}/ablate/{{model}}/{{train}}/seed{{seed}}/{{eval}}/layer{{layer}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/ablate/{{model}}/{{train}}/seed{{seed}}/{{eval}}/layer{{layer}}.tsv"
        threads: lambda wc: res("ablate", "threads")
        resources:
            mem_mb=lambda wc: res("ablate", "mem_mb"),
            runtime=lambda wc: res("ablate", "runtime"),
            gpu=lambda wc: res("ablate", "gpu"),
        shell:
            ABLATE_SHELL + " --layer {wildcards.layer} > {log} 2>&1"

    rule merge_grid:
        input:
            grid_parts,
        output:
            GRID,
        log:
            f"{LOGS}/merge_grid/{{model}}/{{train}}/seed{{seed}}/{{eval}}.log",
        threads: 1
        resources:
            mem_mb=lambda wc: res("default", "mem_mb"),
            runtime=lambda wc: res("default", "runtime"),
        shell:
            "mrcbench merge-grid --out {output} {input} > {log} 2>&1"
