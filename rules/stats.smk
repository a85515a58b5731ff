# Statistical tests over every grid, zone statistics and per-question scores: one job.


rule stats:
    input:
        grids=[f"{RESULTS}/ablation/{run.eval_dir}/grid.parquet" for run in RUNS if run.ablation],
        zone_stats=[f"{RESULTS}/attention/{run.eval_dir}/zone_stats.parquet" for run in RUNS if run.ablation],
        scores=[f"{RESULTS}/predict/{run.eval_dir}/scores.parquet" for run in RUNS],
    output:
        expand(f"{RESULTS}/stats/{{table}}.parquet", table=STATS_TABLES),
    params:
        config=CONFIG,
        results=lambda wc, output: os.path.dirname(os.path.dirname(output[0])),
        out=lambda wc, output: os.path.dirname(output[0]),
        stats=mrc_config.stats_config(config),
    log:
        f"{LOGS}/stats.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc: res("stats", "mem_mb"),
        runtime=lambda wc: res("stats", "runtime"),
    conda:
        "../envs/mrcbench.yaml"
    shell:
        "mrcbench stats --config {params.config} --results {params.results} --out {params.out} > {log} 2>&1"
