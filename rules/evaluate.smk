# Evaluation and plots: each run's final model on the test shards, then every run's
# curves overlaid. Plots and stats are report() outputs: `snakemake --report report.html`.


rule evaluate_run:
    input:
        run_inputs,  # the test shards of the run's own sample set (its length)
        model="results/pretrain/{run}/final/model.safetensors",
    output:
        json=report(
            "results/evaluate/{run}.json",
            category="Evaluation",
            labels={"run": "{run}", "file": "metrics + fill-mask (json)"},
        ),
        md=report(
            "results/evaluate/{run}.md",
            category="Evaluation",
            labels={"run": "{run}", "file": "metrics + fill-mask (table)"},
        ),
    log:
        "logs/evaluate_run/{run}.log",
    conda:
        "../envs/evaluate.yaml"
    threads: 4
    resources:
        gpu=0,
        mem_mb=8000,
        runtime=120,
    params:
        model_dir=subpath(input.model, parent=True),
        dataset=lambda wildcards, input: dataset_arg(input),
        options=evaluate_args(),
    shell:
        "python -m bigs.evaluate --model {params.model_dir:q} --dataset_path {params.dataset:q}"
        " -o {output.json:q} {params.options} > {log:q} 2>&1"


rule plot_runs:
    input:
        metrics=expand("results/pretrain/{run}/final/metrics.jsonl", run=run_names()),
        evals=expand("results/evaluate/{run}.json", run=run_names()),
    output:
        report(
            expand("results/plots/{plot}.png", plot=PLOTS),
            category="Training curves",
        ),
        report("results/plots/summary.md", category="Summary"),
        "results/plots/summary.csv",
        "results/plots/plot_data.csv",
        "results/plots/eval_summary.csv",
    log:
        "logs/plot_runs/plots.log",
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        out_dir=subpath(output[0], parent=True),
        names=run_names(),
    shell:
        "python -m bigs.plots --runs {input.metrics:q} --names {params.names:q}"
        " --eval {input.evals:q} -o {params.out_dir:q} > {log:q} 2>&1"
