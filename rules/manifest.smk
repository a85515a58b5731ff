# The run manifest: path, size and SHA-256 of every result file plus the environment that made them.
# The DAG's last step: it depends on every final output (report included), so it is rewritten
# whenever any of them is; `onstart` (Snakefile) removes an old one before any job runs.


rule manifest:
    input:
        final_outputs(),
    output:
        MANIFEST,
    params:
        config=CONFIG,
        results=lambda wc, output: os.path.dirname(output[0]),
    log:
        log_file("manifest"),
    threads: 1
    resources:
        mem_mb=lambda wc: res("manifest", "mem_mb"),
        runtime=lambda wc: res("manifest", "runtime"),
    conda:
        "../envs/mrcbench.yaml"
    shell:
        "mrcbench manifest --config {params.config:q} --results {params.results:q} --out {output:q} > {log:q} 2>&1"
