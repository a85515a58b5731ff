# The paper-style report: reports/report.qmd rendered with Quarto, or with the built-in fallback
# (nbclient + pandoc, Quarto's page skeleton) where the Quarto CLI is missing.


rule report:
    input:
        qmd=mrc_config.report_config(config).qmd,
        stats=[mrc_layout.stats(RESULTS, f"{table}.parquet") for table in STATS_TABLES],
        references=REFERENCE_MANIFESTS,
    output:
        report(
            mrc_config.report_config(config).html,
            caption="report/report.rst",
            category="Report",
            labels={"file": "paper-style report"},
        ),
    params:
        references=lambda wc: REFERENCE_DIR,
        results=lambda wc, input: os.path.dirname(os.path.dirname(input.stats[0])),
    log:
        log_file("report"),
    threads: 1
    resources:
        mem_mb=lambda wc: res("report", "mem_mb"),
        runtime=lambda wc: res("report", "runtime"),
    conda:
        "../envs/mrcbench.yaml"
    shell:
        "mrcbench report --qmd {input.qmd:q} --results {params.results:q} --out {output:q} --references {params.references:q} > {log:q} 2>&1"
