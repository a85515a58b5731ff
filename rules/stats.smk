# Statistical tests over every grid, zone statistics and per-question scores: one job. It reads
# exactly its inputs (a leftover run folder beside them is never mixed in).


rule stats:
    input:
        grids=run_files("ablation", "grid.parquet", ablation_only=True),
        zone_stats=run_files("attention", "zone_stats.parquet", ablation_only=True),
        scores=run_files("predict", "scores.parquet"),
        metrics=run_files("predict", "metrics.json"),
    output:
        tables=[mrc_layout.stats(RESULTS, f"{table}.parquet") for table in STATS_TABLES],
        # Side outputs: each table as CSV (also in Snakemake's own report), the settings the tests ran
        # with, and the config beside the tables (the report reads it).
        csv=[
            report(
                mrc_layout.stats(RESULTS, f"{table}.csv"),
                caption="report/stats_table.rst",
                category="Statistics tables",
                labels={"table": table},
            )
            for table in STATS_TABLES
        ],
        settings=mrc_layout.stats(RESULTS, "settings.json"),
        config=mrc_layout.stats(RESULTS, mrc_layout.CONFIG_NAME),
    params:
        config=CONFIG,
        # Folders derived from the outputs (whose paths come from mrcbench/runtime/layout.py): Snakemake's
        # provenance does not record params computed from outputs; `RESULTS` itself would be recorded.
        results=lambda wc, output: os.path.dirname(os.path.dirname(output.tables[0])),
        out=lambda wc, output: os.path.dirname(output.tables[0]),
        stats=mrc_config.stats_config(config).as_dict(),
    log:
        log_file("stats"),
    benchmark:
        benchmark_file("stats")
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
