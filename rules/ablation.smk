# Attention-zone ablation: the zone x layer (x head) grid of per-question EM/F1 for one
# (model, train split, seed, eval split). The grid is computed in parts, `all` (one job) or, with
# ablation.split_by_layer, `layer0`, `layer1`, ... (one cluster job each), then merged.


rule ablate:
    input:
        finetuned=finetune_dir,
        eval=lambda wc: split_json(wc.eval),
    output:
        # A part lives until merge_grid has joined every part of its grid (temp), then is deleted.
        temp(mrc_layout.grid_part(RESULTS)),
    params:
        spec=spec("ablate"),
    log:
        log_file("ablate"),
    benchmark:
        benchmark_file("ablate")
    threads: lambda wc: res("ablate", "threads")
    priority: 10  # after fine-tuning, before predictions (rules/finetune.smk)
    resources:
        mem_mb=lambda wc: res("ablate", "mem_mb"),
        runtime=lambda wc: res("ablate", "runtime"),
        gpu=lambda wc: res("ablate", "gpu"),
    conda:
        "../envs/mrcbench.yaml"
    shell:
        "mrcbench ablate --spec {params.spec:q}"
        f" --checkpoint {{input.finetuned:q}}/{mrc_layout.CHECKPOINT}"
        " --eval-json {input.eval:q} --out {output:q} > {log:q} 2>&1"


rule merge_grid:
    input:
        grid_parts,
    output:
        mrc_layout.ablation(RESULTS, "grid.parquet"),
    params:
        spec=spec("merge_grid"),
    log:
        log_file("merge_grid"),
    threads: 1
    resources:
        mem_mb=lambda wc: res("default", "mem_mb"),
        runtime=lambda wc: res("default", "runtime"),
    conda:
        "../envs/mrcbench.yaml"
    shell:
        "mrcbench merge-grid --spec {params.spec:q} --out {output:q} {input:q} > {log:q} 2>&1"
