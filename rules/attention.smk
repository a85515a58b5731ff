# Attention extraction: per-question zone statistics for every layer and head, computed inside the
# attention call, plus full maps for a handful of case-study questions.


rule extract_attention:
    input:
        finetuned=finetune_dir,
        eval=lambda wc: split_json(wc.eval),
        scores=f"{RESULTS}/predict/{{model}}/{{train}}/seed{{seed}}/{{eval}}/scores.parquet",
    output:
        stats=f"{RESULTS}/attention/{{model}}/{{train}}/seed{{seed}}/{{eval}}/zone_stats.parquet",
        maps=f"{RESULTS}/attention/{{model}}/{{train}}/seed{{seed}}/{{eval}}/case_studies.npz",
        cases=f"{RESULTS}/attention/{{model}}/{{train}}/seed{{seed}}/{{eval}}/case_studies.json",
    params:
        config=CONFIG,
        features=lambda wc: mrc_config.features_config(config, wc.model, wc.train).as_dict(),
        attention=mrc_config.attention_config(config).as_dict(),
        inference=mrc_config.inference_config(config).as_dict(),
        out=lambda wc, output: os.path.dirname(output.stats),
    log:
        f"{LOGS}/extract_attention/{{model}}/{{train}}/seed{{seed}}/{{eval}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_attention/{{model}}/{{train}}/seed{{seed}}/{{eval}}.tsv"
    threads: lambda wc: res("extract_attention", "threads")
    resources:
        mem_mb=lambda wc: res("extract_attention", "mem_mb"),
        runtime=lambda wc: res("extract_attention", "runtime"),
        gpu=lambda wc: res("extract_attention", "gpu"),
    conda:
        "../envs/mrcbench.yaml"
    shell:
        "mrcbench extract-attention --config {params.config:q} --model {wildcards.model} --train {wildcards.train}"
        " --seed {wildcards.seed} --eval {wildcards.eval} --checkpoint {input.finetuned:q}/checkpoint"
        " --eval-json {input.eval:q} --scores {input.scores:q} --out {params.out:q} > {log:q} 2>&1"
