# Statistical tests over every grid, zone statistics and per-question scores: one job. It reads
# exactly its inputs (a leftover run folder beside them is never mixed in).


rule stats:
    input:
        grids=[f"{RESULTS}/ablation/{run.eval_dir}/grid.parquet" for run in RUNS if run.ablation],
        zone_stats=[f"{RESULTS}/attention/{run.eval_dir}/zone_stats.parquet" for run in RUNS if run.ablation],
        scores=[f"{RESULTS}/predict/{run.eval_dir}/scores.parquet" for run in RUNS],
        metrics=[f"{RESULTS}/predict/{run.eval_dir}/metrics.json" for run in RUNS],
    output:
        tables=expand(f"{RESULTS}/stats/{{table}}.parquet", table=STATS_TABLES),
        # Side outputs: each table as CSV (also in Snakemake's own report), the settings the tests ran
        # with, and the config beside the tables (the report reads it).
        csv=[
            report(
                f"{RESULTS}/stats/{table}.csv",
                caption="report/stats_table.rst",
                category="Statistics tables",
                labels={"table": table},
            )
            for table in STATS_TABLES
        ],
        settings=f"{RESULTS}/stats/settings.json",
        config=f"{RESULTS}/stats/config.resolved.yaml",
    params:
        config=CONFIG,
        results=lambda wc, output: os.path.dirname(os.path.dirname(output.tables[0])),
        out=lambda wc, output: os.path.dirname(output.tables[0]),
        stats=mrc_config.stats_config(config).as_dict(),
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
        "mrcbench stats --config {params.config:q} --results {params.results:q} --out {params.out:q}"
        " --scores {input.scores:q} --metrics {input.metrics:q} --grids {input.grids:q}"
        " --zone-stats {input.zone_stats:q} > {log:q} 2>&1"
