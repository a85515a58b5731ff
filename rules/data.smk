# Dataset preparation: load (local file or hub), validate answers, split by article, filter
# train/eval leakage, sub-sample; one SQuAD-format JSON per configured split.


rule prepare_data:
    output:
        splits=[mrc_layout.split_json(RESULTS, split) for split in config["splits"]],
        summaries=[mrc_layout.split_summary(RESULTS, split) for split in config["splits"]],
    params:
        spec=spec("prepare_data"),
        out=lambda wc, output: os.path.dirname(output.splits[0]),
    log:
        log_file("prepare_data"),
    benchmark:
        benchmark_file("prepare_data")
    threads: 1
    resources:
        mem_mb=lambda wc: res("default", "mem_mb"),
        runtime=lambda wc: res("default", "runtime"),
    conda:
        "../envs/mrcbench.yaml"
    shell:
        "mrcbench prepare-data --spec {params.spec:q} --out {params.out:q} > {log:q} 2>&1"
