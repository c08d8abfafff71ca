# Pretraining: one job per named run in `runs:`. Only final/ files are declared:
# checkpoint-<step>/ dirs stay between attempts so a preempted or failed job resumes
# (scripts/pretrain.sh resumes only a run started with the same settings and data).


rule train_run:
    input:
        run_inputs,
        init_inputs,  # the run it continues (runs[].init_from), if any
        launcher=PRETRAIN_SH,
    output:
        config="results/pretrain/{run}/final/config.json",
        model="results/pretrain/{run}/final/model.safetensors",
        metrics="results/pretrain/{run}/final/metrics.jsonl",
    log:
        "logs/train_run/{run}.log",
    conda:
        pretrain_env
    threads: 8
    resources:
        gpu=0,  # profiles ask for GPUs (profiles/slurm); > 1 launches torchrun
        nodes=1,  # > 1: one torchrun per node via srun (multi-node: GPUs as gres "gpu:N" per node)
        mem_mb=16000,
        runtime=4320,
    params:
        output_dir=subpath(output.config, ancestor=2),
        args=lambda wildcards, input, output: pretrain_args(
            wildcards.run, subpath(output.config, ancestor=2), dataset_arg(input)
        ),
        settings=lambda wildcards: run_fingerprint(wildcards.run),
        gpus_per_node=lambda wildcards, resources: gpus_per_node(resources),
    shell:
        "bash {input.launcher:q} {params.output_dir:q} {params.settings:q} {params.gpus_per_node}"
        " {threads} {params.args} > {log:q} 2>&1"
