# bigs-workflow: pretrain BiGS ("Pretraining Without Attention") from raw text or the authors'
# corpus, then evaluate and plot. `snakemake --cores all pretrain` runs the embedded default
# (config.yaml); presets are overlays: `--configfile presets/<name>.yaml`. Stages, targets and
# reruns: docs/WORKFLOW.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"


validate_config(config)  # before any job; errors name the key

shell.prefix(JOB_PREFIX)  # strict bash; `bigs` from this checkout, also in conda envs


wildcard_constraints:
    corpus=re.escape(config["corpus"]["name"]),
    dataset="|".join(re.escape(d) for d in dataset_names()),
    source="|".join(re.escape(s) for s in raw_sources()),
    run="|".join(re.escape(r) for r in run_names()),
    split="train|test",
    k=r"\d+",
    textshard=r"(training|test)\d+",


include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/evaluate.smk"
include: "rules/finetune.smk"
include: "rules/export.smk"


# ---- targets: each stage by name; `pretrain` is the main one (model + evaluation + plots)
rule all:
    default_target: True
    input:
        stage_targets("pretrain"),
    localrule: True


rule corpus:
    input:
        stage_targets("corpus"),
    localrule: True


rule shards:
    input:
        stage_targets("shards"),
    localrule: True


rule samples:
    input:
        stage_targets("samples"),
    localrule: True


rule inspect:
    input:
        stage_targets("inspect"),
    localrule: True


rule pretrain:
    input:
        stage_targets("pretrain"),
    localrule: True


rule evaluate:
    input:
        stage_targets("evaluate"),
    localrule: True


rule plots:
    input:
        stage_targets("plots"),
    localrule: True


rule finetune:
    input:
        finetune_targets,
    localrule: True


rule export:  # the model cards, with everything they report: `snakemake --report report.html export`
    input:
        stage_targets("pretrain"),
        expand("results/pretrain/{run}/final/README.md", run=run_names()),
    localrule: True
