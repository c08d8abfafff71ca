# GLUE fine-tuning: one job per (fine-tuned run x task x seed), then a table per run,
# a table over runs and a bar plot. <ftrun> is a run of `runs:` or its random-init control
# (<run>-random-init); which model a job starts from: finetune_start() in rules/common.smk.


rule finetune_task:
    input:
        glue_data_files,
        model=finetune_start,
    output:
        results="results/finetune/{ftrun}/{task}/seed{seed}/eval_results.json",
        model="results/finetune/{ftrun}/{task}/seed{seed}/model.safetensors",
    log:
        "logs/finetune_task/{ftrun}/{task}/seed{seed}.log",
    wildcard_constraints:
        ftrun="|".join(re.escape(n) for n in finetune_variants()),
        task="|".join(GLUE_DIRS),
        seed=r"\d+",
    conda:
        "../envs/finetune.yaml"
    threads: 4
    resources:
        gpu=0,
        mem_mb=16000,
        runtime=1440,
    params:
        args=finetune_args,
    shell:
        "python -m bigs.finetune {params.args} > {log:q} 2>&1"


rule glue_table_run:
    input:
        glue_results,
    output:
        csv="results/glue/{ftrun}.csv",
        md=report(
            "results/glue/{ftrun}.md",
            category="GLUE",
            labels={"run": "{ftrun}", "file": "GLUE dev (table)"},
        ),
    log:
        "logs/glue_table_run/{ftrun}.log",
    wildcard_constraints:
        ftrun="|".join(re.escape(n) for n in finetune_variants()),
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        out=lambda wildcards, output: output.csv.removesuffix(".csv"),
    shell:
        "python -m bigs.glue_table run --name {wildcards.ftrun:q} --results {input:q}"
        " -o {params.out:q} > {log:q} 2>&1"


rule glue_summary:
    input:
        expand("results/glue/{ftrun}.csv", ftrun=finetune_variants()),
    output:
        csv="results/glue/summary.csv",
        md=report("results/glue/summary.md", category="GLUE"),
        plot=report("results/plots/glue.png", category="GLUE"),
    log:
        "logs/glue_summary/summary.log",
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        out=lambda wildcards, output: output.csv.removesuffix(".csv"),
    shell:
        "python -m bigs.glue_table summary --tables {input:q} -o {params.out:q}"
        " --plot {output.plot:q} > {log:q} 2>&1"


rule glue_budget:
    input:
        tables=lambda wildcards: [f"results/glue/{v}.csv" for v in budget_variants()],
    output:
        csv="results/glue/budget.csv",
        md=report("results/glue/budget.md", category="GLUE"),
        plot=report("results/plots/glue_budget.png", category="GLUE"),
    log:
        "logs/glue_budget/budget.log",
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        out=lambda wildcards, output: output.csv.removesuffix(".csv"),
        models=lambda wildcards: list(budget_variants().values()),  # written by train_run before its final/
    shell:
        "python -m bigs.glue_table budget --tables {input.tables:q} --models {params.models:q}"
        " -o {params.out:q} --plot {output.plot:q} > {log:q} 2>&1"
