# Prediction and official-equivalent scoring, one job per (model, train split, seed, eval split).


rule predict:
    input:
        finetuned=finetune_dir,
        eval=lambda wc: split_json(wc.eval),
    output:
        metrics=report(
            mrc_layout.predict(RESULTS, "metrics.json"),
            caption="report/metrics.rst",
            category="Official scores",
            labels={"model": "{model}", "train": "{train}", "seed": "{seed}", "eval": "{eval}"},
        ),
        scores=mrc_layout.predict(RESULTS, "scores.parquet"),
        predictions=mrc_layout.predict(RESULTS, "predictions.json"),
    params:
        spec=spec("predict"),
        out=lambda wc, output: os.path.dirname(output.metrics),
    log:
        log_file("predict"),
    benchmark:
        benchmark_file("predict")
    threads: lambda wc: res("predict", "threads")
    resources:
        mem_mb=lambda wc: res("predict", "mem_mb"),
        runtime=lambda wc: res("predict", "runtime"),
        gpu=lambda wc: res("predict", "gpu"),
    conda:
        "../envs/mrcbench.yaml"
    shell:
        "mrcbench predict --spec {params.spec:q}"
        f" --checkpoint {{input.finetuned:q}}/{mrc_layout.CHECKPOINT}"
        " --eval-json {input.eval:q} --out {params.out:q} > {log:q} 2>&1"
