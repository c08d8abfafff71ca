# Model cards: one per run, final/README.md, after its evaluation (and its GLUE table when GLUE is
# configured); linked from the report. `python -m bigs.export RUN_DIR --push_to_hub USER/NAME` uploads one.


rule export_run:
    input:
        unpack(export_inputs),
    output:
        report(
            "results/pretrain/{run}/final/README.md",
            category="Model cards",
            labels={"run": "{run}", "file": "model card"},
        ),
    log:
        "logs/export_run/{run}.log",
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        run_dir=lambda wildcards, input: subpath(input.model, ancestor=2),
        options=export_args,
    shell:
        "python -m bigs.export {params.run_dir:q} {params.options} > {log:q} 2>&1"
