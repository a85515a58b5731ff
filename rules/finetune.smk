# Fine-tuning for span extraction, one job per (model, train split, seed); with training.init_from
# a job starts from another train split's fine-tuned checkpoint (same model and seed), a DAG edge.


rule finetune:
    input:
        model=model_dir,
        train=lambda wc: split_json(wc.train),
        init=init_finetune_dir,
    output:
        directory(mrc_layout.finetune_dir(RESULTS)),
    params:
        spec=spec("finetune"),
        init=init_checkpoint_arg,
    log:
        log_file("finetune"),
    benchmark:
        benchmark_file("finetune")
    threads: lambda wc: res("finetune", "threads")
    # Longest jobs first: fine-tuning (20), then the grids (10); predictions and attention statistics
    # (0) fill the gaps, so that no long job starts last with the other cores idle.
    priority: 20
    resources:
        mem_mb=lambda wc: res("finetune", "mem_mb"),
        runtime=lambda wc: res("finetune", "runtime"),
        gpu=lambda wc: res("finetune", "gpu"),
    conda:
        "../envs/mrcbench.yaml"
    shell:
        "mrcbench finetune --spec {params.spec:q} --model-dir {input.model:q} --train-json {input.train:q} --out {output:q}"
        " --init-checkpoint={params.init:q} > {log:q} 2>&1"
