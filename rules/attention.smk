# Attention extraction: per-question zone statistics for every layer and head, computed inside the
# attention call, plus full maps for a handful of case-study questions.


rule extract_attention:
    input:
        finetuned=finetune_dir,
        eval=lambda wc: split_json(wc.eval),
        scores=mrc_layout.predict(RESULTS, "scores.parquet"),
    output:
        stats=mrc_layout.attention(RESULTS, "zone_stats.parquet"),
        maps=mrc_layout.attention(RESULTS, "case_studies.npz"),
        cases=mrc_layout.attention(RESULTS, "case_studies.json"),
    params:
        spec=spec("extract_attention"),
        out=lambda wc, output: os.path.dirname(output.stats),
    log:
        log_file("extract_attention"),
    benchmark:
        benchmark_file("extract_attention")
    threads: lambda wc: res("extract_attention", "threads")
    resources:
        mem_mb=lambda wc: res("extract_attention", "mem_mb"),
        runtime=lambda wc: res("extract_attention", "runtime"),
        gpu=lambda wc: res("extract_attention", "gpu"),
    conda:
        "../envs/mrcbench.yaml"
    shell:
        "mrcbench extract-attention --spec {params.spec:q}"
        f" --checkpoint {{input.finetuned:q}}/{mrc_layout.CHECKPOINT}"
        " --eval-json {input.eval:q} --scores {input.scores:q} --out {params.out:q} > {log:q} 2>&1"
