# Prediction and official-equivalent scoring, one job per (model, train split, seed, eval split).


rule predict:
    input:
        finetuned=finetune_dir,
        eval=lambda wc: split_json(wc.eval),
    output:
        metrics=report(
            f"{RESULTS}/predict/{{model}}/{{train}}/seed{{seed}}/{{eval}}/metrics.json",
            caption="report/metrics.rst",
            category="Official scores",
            labels={"model": "{model}", "train": "{train}", "seed": "{seed}", "eval": "{eval}"},
        ),
        scores=f"{RESULTS}/predict/{{model}}/{{train}}/seed{{seed}}/{{eval}}/scores.parquet",
        predictions=f"{RESULTS}/predict/{{model}}/{{train}}/seed{{seed}}/{{eval}}/predictions.json",
    params:
        config=CONFIG,
        features=lambda wc: mrc_config.features_config(config, wc.model, wc.train).as_dict(),
        decoding=mrc_config.decoding_config(config).as_dict(),
        inference=mrc_config.inference_config(config).as_dict(),
        out=lambda wc, output: os.path.dirname(output.metrics),
    log:
        f"{LOGS}/predict/{{model}}/{{train}}/seed{{seed}}/{{eval}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict/{{model}}/{{train}}/seed{{seed}}/{{eval}}.tsv"
    threads: lambda wc: res("predict", "threads")
    resources:
        mem_mb=lambda wc: res("predict", "mem_mb"),
        runtime=lambda wc: res("predict", "runtime"),
        gpu=lambda wc: res("predict", "gpu"),
    conda:
        "../envs/mrcbench.yaml"
    shell:
        "mrcbench predict --config {params.config:q} --model {wildcards.model} --train {wildcards.train}"
        " --seed {wildcards.seed} --eval {wildcards.eval} --checkpoint {input.finetuned:q}/checkpoint"
        " --eval-json {input.eval:q} --out {params.out:q} > {log:q} 2>&1"
