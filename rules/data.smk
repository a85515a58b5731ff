# Dataset preparation: load (local file or hub), validate answers, split by article, filter
# train/eval leakage, sub-sample; one SQuAD-format JSON per configured split.


rule prepare_data:
    output:
        splits=expand(f"{RESULTS}/data/{{split}}.json", split=list(config["splits"])),
        summaries=expand(f"{RESULTS}/data/{{split}}.summary.json", split=list(config["splits"])),
    params:
        datasets=config["datasets"],
        splits=config["splits"],
        seed=config.get("sample_seed"),
        validation=config.get("validation"),
    log:
        f"{LOGS}/prepare_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc: res("default", "mem_mb"),
        runtime=lambda wc: res("default", "runtime"),
    shell:
        "mrcbench prepare-data --config {CONFIG} --out {RESULTS}/data > {log} 2>&1"
