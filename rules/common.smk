# Helpers and input functions only: no rules here. Everything reads the validated `config`,
# so nothing below is evaluated before validate_config() has run (see the Snakefile).

import hashlib
import os
import json
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


# ---------------------------------------------------------------------------- config checks
def _key(path):
    """jsonschema's deque(['runs', 0, 'name']) -> 'runs[0].name'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "<top level>"


def _describe(err):
    """One line for one jsonschema error, naming the config key."""
    key = _key(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        unknown = sorted(set(err.instance) - set(allowed))
        where = f"{key}." if err.absolute_path else ""
        return f"unknown key {', '.join(where + k for k in unknown)} (allowed: {', '.join(allowed)})"
    if err.validator == "pattern" or (
        err.validator == "anyOf" and isinstance(err.instance, str)
    ):
        return (
            f"{key}: {err.instance!r} is not allowed: names take letters, digits and . _ -; "
            "paths also / + , = @ % (no spaces or shell metacharacters)"
        )
    return f"{key}: {err.message}"


def load_schema(schema):
    import yaml

    with open(Path(workflow.basedir) / schema) as f:
        return yaml.safe_load(f)


SCHEMA_FILE = "schemas/config.schema.yaml"
SCHEMA = load_schema(SCHEMA_FILE)
# The flags of `python -m bigs.pretrain` the workflow sets, in order: the schema's pretrain block.
PRETRAIN_FLAGS = list(SCHEMA["properties"]["pretrain"]["properties"])


def run_schema(spec):
    """A `runs:` entry: name + any pretrain key, by the pretrain block's definitions minus their
    defaults (unset keys inherit from `pretrain:`, they are not reset to the defaults).
    """
    flags = spec["properties"]["pretrain"]["properties"]
    props = {
        k: {kk: v for kk, v in d.items() if kk != "default"} for k, d in flags.items()
    }
    item = dict(spec["properties"]["runs"]["items"])
    item["properties"] = {**props, **item["properties"]}
    item["additionalProperties"] = False
    return item


def repeated(names):
    """The names that occur more than once, sorted."""
    names = list(names)
    return sorted({n for n in names if names.count(n) > 1})


def validate_config(config):
    """Schema check, then cross-key checks, all before any job runs; every message names the
    key, so a typo never starts a 100k-step job. snakemake's validate() then fills the schema's defaults into `config`.
    """
    import copy

    import jsonschema

    spec = copy.deepcopy(SCHEMA)
    spec["properties"]["runs"]["items"] = run_schema(spec)
    errors = sorted(
        jsonschema.Draft202012Validator(spec).iter_errors(config),
        key=lambda e: _key(e.absolute_path),
    )
    if errors:
        lines = "\n".join(f"  {_describe(e)}" for e in errors)
        raise WorkflowError(f"Invalid config ({SCHEMA_FILE}):\n{lines}")
    validate(config, SCHEMA_FILE)

    dupes = repeated(r["name"] for r in config["runs"])
    if dupes:
        raise WorkflowError(f"Invalid config: runs: duplicate run name(s) {dupes}")
    prebuilt = config["corpus"]["prebuilt"]
    if config["corpus"]["source"] == "prebuilt" and prebuilt["stream"]:
        if not prebuilt["url"].startswith("gs://"):
            raise WorkflowError(
                "Invalid config: corpus.prebuilt.stream: true needs a gs:// corpus.prebuilt.url"
            )
    for src in config["corpus"]["raw"]["sources"]:
        if "url" in src and not (src.get("md5") or src.get("md5_url")):
            raise WorkflowError(
                f"Invalid config: corpus.raw.sources[{src['name']}]: a url needs md5 or md5_url "
                "(the dump's md5sums file): a download is always verified"
            )
    dupes = repeated(
        [config["samples"]["name"]] + [s["name"] for s in config["samples"]["sets"]]
    )
    if dupes:
        raise WorkflowError(
            f"Invalid config: samples.sets: duplicate sample set name(s) {dupes} (samples.name is one too)"
        )
    for run in config["runs"]:
        s = run_settings(run["name"])
        if s["warmup_steps"] > s["num_total_train_steps"]:
            raise WorkflowError(
                f"Invalid config: runs[{run['name']}]: warmup_steps ({s['warmup_steps']}) must be "
                f"<= num_total_train_steps ({s['num_total_train_steps']})"
            )
        for key in ("early_exit_time_marker", "finetune_time_markers"):
            if s[key] and s["total_training_time"] is None:
                raise WorkflowError(
                    f"Invalid config: runs[{run['name']}]: {key} needs total_training_time "
                    "(the budget it is measured against)"
                )
    for name, s in sample_sets().items():
        if s["max_predictions_per_seq"] >= s["max_seq_length"]:
            raise WorkflowError(
                f"Invalid config: samples[{name}]: max_predictions_per_seq "
                f"({s['max_predictions_per_seq']}) must be < max_seq_length ({s['max_seq_length']})"
            )
    check_sample_choices()
    check_chains()


# ---------------------------------------------------------------------------- names and paths
def q(value):
    """Quote one value for a shell command (config strings only ever reach shells this way)."""
    return shlex.quote(str(value))


def run_names():
    return [r["name"] for r in config["runs"]]


def run_settings(name):
    """`pretrain:` defaults overlaid with the run's own keys."""
    run = next(r for r in config["runs"] if r["name"] == name)
    return {**config["pretrain"], **{k: v for k, v in run.items() if k != "name"}}


def corpus_source():
    """'raw', 'prebuilt' (downloaded to resources/) or 'stream' (gs:// read by pretrain)."""
    c = config["corpus"]
    if c["source"] == "prebuilt" and c["prebuilt"]["stream"]:
        return "stream"
    return c["source"]


def sample_sets():
    """Sample set name -> its settings: `samples:` itself (the default set) and each of samples.sets,
    whose unset keys are samples:'s — except max_predictions_per_seq, which scales with the length
    unless set (BERT's phase 2: 80 at 512 for 20 at 128): P = samples.P x L / samples.L, rounded.
    """
    base = {k: v for k, v in config["samples"].items() if k != "sets"}
    out = {base["name"]: base}
    for extra in config["samples"]["sets"]:
        L = extra.get("max_seq_length", base["max_seq_length"])
        P = round(base["max_predictions_per_seq"] * L / base["max_seq_length"])
        out[extra["name"]] = {**base, "max_predictions_per_seq": P, **extra}
    return out


def run_sample_set(run):
    """The sample set a run trains and is evaluated on (runs[].samples, else samples.name)."""
    return run_settings(run).get("samples") or config["samples"]["name"]


def run_length(run):
    """A run's sequence length: its sample set's; None for a downloaded corpus (the shards say: 128)."""
    if corpus_source() != "raw":
        return None
    return sample_sets()[run_sample_set(run)]["max_seq_length"]


def dataset_name(sample_set=None):
    """Names an hdf5 dataset: <corpus>-<sample set> when built here, <corpus> when prebuilt."""
    c = config["corpus"]["name"]
    return (
        f"{c}-{sample_set or config['samples']['name']}"
        if corpus_source() == "raw"
        else c
    )


def dataset_names():
    if corpus_source() != "raw":
        return [dataset_name()]
    return [dataset_name(s) for s in sample_sets()]


def sample_set_of(dataset):
    """<corpus>-<set> -> the set's settings."""
    return sample_sets()[dataset.removeprefix(f"{config['corpus']['name']}-")]


def prebuilt_path():
    """Where a downloaded corpus lives, or the gs:// url it is streamed from; a corpus built here
    is one dir per sample set (dataset_inputs)."""
    if corpus_source() == "prebuilt":
        return f"resources/prebuilt/{config['corpus']['name']}"
    return config["corpus"]["prebuilt"]["url"]


def fetch_source_args():
    """bigs.data.fetch's source: the manifest (every file listed, for folders of thousands) or the folder."""
    p = config["corpus"]["prebuilt"]
    if p["manifest"]:
        return f"--manifest {q(p['manifest'])}"
    return f"--source {q(p['url'])}"


def fetch_manifest():
    """A local manifest is an input: editing it refetches."""
    m = config["corpus"]["prebuilt"]["manifest"]
    return [m] if m and not m.startswith(("http://", "https://", "gs://")) else []


def gpus_per_node(resources):
    """The launcher's processes per node: `gres: gpu:N` (per node in SLURM: multi-node jobs) or
    `gpu` (sbatch --gpus, the job's total: one node)."""
    m = re.search(r"gpu(?::[^:,]+)?:(\d+)", str(getattr(resources, "gres", "") or ""))
    return int(m.group(1)) if m else resources.gpu


def raw_sources():
    """Source name -> {name, type, path | url, md5 | md5_url}: corpus.raw.sources, or the one
    corpus.raw {type, path} source (named after its type)."""
    raw = config["corpus"]["raw"]
    if raw["sources"]:
        return {s["name"]: s for s in raw["sources"]}
    return {
        raw["type"]: {"name": raw["type"], "type": raw["type"], "path": raw["path"]}
    }


def raw_download(source):
    """Where fetch_raw puts a source given by URL."""
    return f"resources/raw/{config['corpus']['name']}/{source['name']}/{source['url'].rsplit('/', 1)[-1]}"


def raw_input(wildcards):
    """The raw text of one source: its local path, or the download of its URL."""
    s = raw_sources()[wildcards.source]
    return raw_download(s) if s.get("url") else s["path"]


def raw_checksum(wildcards):
    s = raw_sources()[wildcards.source]
    return f"--md5 {q(s['md5'])}" if s.get("md5") else f"--md5_url {q(s['md5_url'])}"


def raw_url(wildcards):
    return raw_sources()[wildcards.source]["url"]


def corpus_texts():
    """The one-article-per-line file of bigs.data.process, one per source: sharded together."""
    c = config["corpus"]["name"]
    return [
        f"results/corpus/{c}/{name}/{s['type']}_one_article_per_line.txt"
        for name, s in raw_sources().items()
    ]


def text_shards(corpus=None):
    """results/shards/<corpus>/{training,test}{i}.txt of bigs.data.shard."""
    corpus = corpus or config["corpus"]["name"]
    n = {
        "training": config["shards"]["num_train_shards"],
        "test": config["shards"]["num_test_shards"],
    }
    return [
        f"results/shards/{corpus}/{split}{i}.txt"
        for split in n
        for i in range(n[split])
    ]


# Mirrors bigs.data.samples.output_index (tests/test_workflow.py checks they agree):
# copy j of text shard i of a split with n shards is written as <split>_shard_{j * n + i}.hdf5,
# so the k of academic-budget's generate_samples.py is kept and seeds are seed + k.
def output_index(shard_index, copy, num_shards):
    return copy * num_shards + shard_index


def sample_split(split):
    """hdf5 split name ('train' | 'test') -> text shard prefix and count."""
    if split == "train":
        return "training", config["shards"]["num_train_shards"]
    return "test", config["shards"]["num_test_shards"]


def sample_files(sample_set=None):
    """Every hdf5 shard of one sample set built here (raw source only)."""
    s = sample_sets()[sample_set or config["samples"]["name"]]
    files = []
    for split in ("train", "test"):
        _, n = sample_split(split)
        files += [
            f"results/samples/{dataset_name(s['name'])}/{split}_shard_{output_index(i, j, n)}.hdf5"
            for j in range(s["dup_factor"])
            for i in range(n)
        ]
    return files


def sample_source(wildcards):
    """hdf5 shard k of a split -> its text shard (name, index i, count n) and dup copy j."""
    prefix, n = sample_split(wildcards.split)
    k = int(wildcards.k)
    i, j = k % n, k // n
    assert output_index(i, j, n) == k
    return {"textshard": f"{prefix}{i}", "shard_index": i, "num_shards": n, "copy": j}


def sample_tokens(wildcards):
    """The token file that hdf5 shard k is a masked copy of."""
    textshard = sample_source(wildcards)["textshard"]
    return f"results/tokens/{config['corpus']['name']}/{textshard}.npz"


def mask_args(wildcards):
    """bigs.data.samples mask's flags for hdf5 shard k of a dataset: which text shard and dup copy it
    masks, and its sample set's masking."""
    src, s = sample_source(wildcards), sample_set_of(wildcards.dataset)
    args = [f"--{k} {src[k]}" for k in ("copy", "shard_index", "num_shards")]
    keys = (
        "seed",
        "masked_lm_prob",
        "max_seq_length",
        "max_predictions_per_seq",
        "short_seq_prob",
    )
    args += [f"--{k} {s[k]}" for k in keys]
    return " ".join(args + (["--whole_word_mask"] if s["whole_word_mask"] else []))


def dataset_inputs(sample_set=None):
    """Files a job on one dataset needs before it starts (none when streaming)."""
    src = corpus_source()
    if src == "raw":
        return sample_files(sample_set)
    if src == "prebuilt":
        return [prebuilt_path()]
    return []


def run_inputs(wildcards):
    """A training or evaluation job's data: its run's sample set."""
    return dataset_inputs(run_sample_set(wildcards.run))


def dataset_set_inputs(wildcards):
    """inspect_dataset's files: the dataset's own."""
    return dataset_inputs(
        sample_set_of(wildcards.dataset)["name"] if corpus_source() == "raw" else None
    )


# ---------------------------------------------------------------------------- chains of runs
def init_parent(run):
    """The run of `runs:` that `run` starts from (init_from naming a run), else None."""
    src = run_settings(run).get("init_from")
    return src if src in run_names() else None


def check_sample_choices():
    sets = sample_sets()
    for run in run_names():
        chosen = run_settings(run).get("samples")
        if chosen and corpus_source() != "raw":
            raise WorkflowError(
                f"Invalid config: runs[{run}].samples: sample sets are built from raw text; a prebuilt "
                "corpus has its own shards (corpus.source: raw to build sets at other lengths)"
            )
        if chosen and chosen not in sets:
            raise WorkflowError(
                f"Invalid config: runs[{run}].samples: {chosen!r} is not a sample set ({', '.join(sets)})"
            )
    if config["samples"]["sets"] and corpus_source() != "raw":
        raise WorkflowError(
            "Invalid config: samples.sets: sample sets are built from raw text (corpus.source: raw)"
        )


def check_chains():
    """init_from: a run of `runs:` (not itself, no cycle, not longer than the child), or a path or hub name."""
    for run in run_names():
        src = run_settings(run).get("init_from")
        if src is None or src in run_names():
            continue
        if "/" not in src and not Path(src).exists():
            raise WorkflowError(
                f"Invalid config: runs[{run}].init_from: {src!r} is not a run of runs: ({', '.join(run_names())}), "
                "a local path or a hub name (owner/name)"
            )
    for run in run_names():
        seen, cur = [run], init_parent(run)
        while cur is not None:
            if cur in seen:
                raise WorkflowError(
                    f"Invalid config: runs[{run}].init_from: a cycle ({' -> '.join(seen + [cur])})"
                )
            seen.append(cur)
            cur = init_parent(cur)
        parent = init_parent(run)
        if parent and (run_length(run) or 0) < (run_length(parent) or 0):
            raise WorkflowError(
                f"Invalid config: runs[{run}].init_from: {parent} has length {run_length(parent)}, {run} "
                f"{run_length(run)}: a run continues a model at its length or longer (samples sets)"
            )


def init_inputs(wildcards):
    """The model a run starts from, when it is another run's: its final/ (the DAG's edge)."""
    parent = init_parent(wildcards.run)
    return [f"results/pretrain/{parent}/final/model.safetensors"] if parent else []


# ---------------------------------------------------------------------------- command lines


def _flag(key, value):
    if isinstance(value, bool):  # store_true flags: present or absent
        return [f"--{key}"] if value else []
    if value is None:  # not set: bigs.pretrain's default applies
        return []
    if isinstance(
        value, list
    ):  # --finetune_time_markers 0.25,0.5: a set of fractions, in order
        return [f"--{key}={','.join(f'{v:g}' for v in sorted(value))}"]
    if isinstance(value, float):
        value = repr(value)  # 6e-4 -> '0.0006': exact round trip
    return [f"--{key}={value}"]


def pretrain_args(run, output_dir, dataset):
    """The flags of `python -m bigs.pretrain` for one run, shell-quoted. The sequence length is
    the data's: samples.max_seq_length when built here; a downloaded corpus's shards tell
    bigs.pretrain themselves."""
    s = run_settings(run)
    args = [f"--output_dir={output_dir}", f"--dataset_path={dataset}"]
    args += _flag("max_seq_length", run_length(run))
    src = s.get("init_from")
    args += _flag(
        "model_name_or_path",
        f"results/pretrain/{src}/final" if src in run_names() else src,
    )
    for key in PRETRAIN_FLAGS:
        args += _flag(key, s[key])
    return " ".join(q(a) for a in args)


def run_fingerprint(run):
    """Hash of everything that shapes a run's outputs: its flags and how its data was made.
    scripts/pretrain.sh resumes checkpoints only when this matches the one that wrote them.
    """
    c = config["corpus"]
    if c["source"] == "raw":
        data = [
            c["name"],
            c["raw"],
            config["shards"],
            sample_sets()[run_sample_set(run)],
        ]
    else:
        data = [c["name"], c["prebuilt"]]
    parent = init_parent(run)  # a changed parent reruns its chain
    blob = json.dumps(
        [pretrain_args(run, "", ""), data, parent and run_fingerprint(parent)],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrain_env(wildcards):
    """torch-xla env for TPU runs, the CUDA torch env otherwise."""
    tpu = run_settings(wildcards.run)["device"] == "xla"
    return "../envs/pretrain-tpu.yaml" if tpu else "../envs/pretrain-gpu.yaml"


def evaluate_args():
    e = config["evaluate"]
    args = [f"--batch_size={e['batch_size']}"]
    args += [f"--max_batches={e['max_batches']}"] if e["max_batches"] else []
    args += [f"--probes={e['probes']}"] if e["probes"] else []
    return " ".join(q(a) for a in args)


# The one launcher of bigs.pretrain (torchrun for several GPUs, resume rules); absolute so that
# `--directory` elsewhere still finds it; an input, so editing it reruns pretraining.
PRETRAIN_SH = str(Path(workflow.basedir) / "scripts" / "pretrain.sh")


# Every job's shell starts with this: strict bash, and `bigs` imported from this checkout (also
# inside the per-stage conda envs, which hold only third-party packages). The prefix is
# str.format-ed per job, hence the doubled braces.
def _interpreter_path():
    """Without --sdm conda, jobs run the Python that runs Snakemake, so `.venv/bin/snakemake`
    works without activating the venv (else `python` could be another interpreter)."""
    from snakemake.settings.types import DeploymentMethod

    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return ""
    return f"export PATH={q(os.path.dirname(sys.executable))}:$PATH; "


JOB_PREFIX = (
    "set -euo pipefail; "
    f"export PYTHONPATH={q(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    + _interpreter_path()
)


def dataset_arg(input):
    """--dataset_path of a job from its declared inputs (dir of the hdf5 files, the prebuilt
    dir) or the gs:// url when streaming; inputs first, so remote file systems also work.
    """
    src = corpus_source()
    if src == "raw":
        return os.path.dirname(input[0])
    if src == "prebuilt":
        return input[0]
    return prebuilt_path()


PLOTS = ["train_loss", "learning_rate", "eval_vs_step", "eval_vs_tokens", "throughput"]


def stage_targets(stage):
    """Files each named target (Snakefile) brings; empty where a stage does not apply
    (shards/samples of a prebuilt corpus, corpus of a streamed one)."""
    src = corpus_source()
    runs = run_names()
    if stage == "corpus":
        return {"raw": corpus_texts(), "prebuilt": [prebuilt_path()]}.get(src, [])
    if stage == "shards":
        return text_shards() if src == "raw" else []
    if stage == "samples":
        return (
            [f for s in sample_sets() for f in dataset_inputs(s)]
            if src == "raw"
            else dataset_inputs()
        )
    if stage == "inspect":
        return [f"results/inspect/{d}.json" for d in dataset_names()]
    if stage == "evaluate":
        return [f"results/evaluate/{r}.json" for r in runs]
    if stage == "plots":
        return [f"results/plots/{p}.png" for p in PLOTS] + ["results/plots/summary.md"]
    assert stage == "pretrain", stage  # the main target: everything the report shows
    models = [f"results/pretrain/{r}/final/model.safetensors" for r in runs]
    # the data it trains on (samples/inspect build every set)
    used = sorted({dataset_name(run_sample_set(r)) for r in runs})
    return (
        models
        + [f"results/inspect/{d}.json" for d in used]
        + stage_targets("evaluate")
        + stage_targets("plots")
    )


def vocab_args():
    """--vocab_file only when set; bigs.data.samples falls back to the bundled vocab."""
    v = config["samples"]["vocab_file"]
    return f"--vocab_file {q(v)}" if v else ""


# ---------------------------------------------------------------------------- GLUE fine-tuning
# Directory names of the GLUE download script (bigs/glue.py TASKS is the full table).
GLUE_DIRS = {
    "cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP",
    "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI",
}  # fmt: skip
GLUE_DEV = {"mnli": ["dev_matched", "dev_mismatched"]}
# Hyper-parameters of `finetune:` that a task may override (finetune.per_task.<task>).
FINETUNE_FLAGS = [
    "max_seq_length", "per_device_train_batch_size", "per_device_eval_batch_size",
    "learning_rate", "num_train_epochs", "weight_decay", "warmup_ratio",
    "max_train_samples", "max_eval_samples", "logging_steps", "save_steps",
]  # fmt: skip


def time_markers(run):
    """The fractions of its time budget at which a run keeps a model (bigs.pretrain writes marker-<f>/)."""
    return run_settings(run)["finetune_time_markers"] or []


def finetune_variants():
    """Fine-tuned run name -> {"run": pretrained run, "random_init": bool, "marker": fraction or None}:
    each run; with finetune.random_init_control its config from random weights (<run>-random-init);
    with finetune.time_markers the models it kept along its time budget (<run>-at-<f>).
    """
    f = config["finetune"]
    out = {r: {"run": r, "random_init": False, "marker": None} for r in run_names()}
    if f["random_init_control"]:
        out.update(
            {
                f"{r}-random-init": {"run": r, "random_init": True, "marker": None}
                for r in run_names()
            }
        )
    if f["time_markers"]:
        for r in run_names():
            out.update(
                {
                    f"{r}-at-{m:g}": {"run": r, "random_init": False, "marker": m}
                    for m in time_markers(r)
                }
            )
    return out


def finetune_settings(task):
    """`finetune:` hyper-parameters overlaid with finetune.per_task.<task>."""
    f = config["finetune"]
    return {**{k: f[k] for k in FINETUNE_FLAGS}, **f["per_task"].get(task, {})}


def glue_data_files(wildcards):
    """The task's train and dev .tsv files of finetune.data_dir (none for the hub)."""
    d = config["finetune"]["data_dir"]
    if not d:
        return []
    task_dir = f"{d}/{GLUE_DIRS[wildcards.task]}"
    return [
        f"{task_dir}/{s}.tsv" for s in ["train", *GLUE_DEV.get(wildcards.task, ["dev"])]
    ]


def finetune_start(wildcards):
    """The weights a job depends on: the pretrained run's final/ (a time-marker model is written by
    the same job, before it), or for finetune.from_mnli tasks the same seed's MNLI-fine-tuned model
    (REFERENCE.md §5)."""
    if wildcards.task in config["finetune"]["from_mnli"]:
        return f"results/finetune/{wildcards.ftrun}/mnli/seed{wildcards.seed}/model.safetensors"
    return f"results/pretrain/{finetune_variants()[wildcards.ftrun]['run']}/final/model.safetensors"


def finetune_model_dir(wildcards):
    """The model a job starts from: finetune_start's dir, or the run's marker-<f>/ for a time marker."""
    v = finetune_variants()[wildcards.ftrun]
    if (
        v["marker"] is not None
        and wildcards.task not in config["finetune"]["from_mnli"]
    ):
        return f"results/pretrain/{v['run']}/marker-{v['marker']:g}"
    return os.path.dirname(finetune_start(wildcards))


def finetune_args(wildcards):
    """The flags of `python -m bigs.finetune` for one (run x task x seed) job, shell-quoted.
    A function of the wildcards only, so Snakemake records it and reruns the job when it
    changes (params computed from input/output count as derived and are not compared).
    """
    f = config["finetune"]
    random_init = finetune_variants()[wildcards.ftrun]["random_init"]
    from_mnli = wildcards.task in f["from_mnli"]
    w = wildcards
    args = [
        f"--model_name_or_path={finetune_model_dir(wildcards)}",
        f"--task_name={wildcards.task}",
        "--do_train",
        "--do_eval",
        f"--output_dir=results/finetune/{w.ftrun}/{w.task}/seed{w.seed}",
        f"--seed={wildcards.seed}",
        f"--device={f['device']}",
        "--save_total_limit=1",
    ]
    args += ["--ignore_mismatched_sizes"] if from_mnli else []
    args += ["--random_init"] if random_init and not from_mnli else []
    args += [f"--data_dir={f['data_dir']}"] if f["data_dir"] else []
    s = finetune_settings(wildcards.task)
    if (
        s["max_seq_length"] is None
    ):  # the run's own length (a downloaded corpus: the authors' 128)
        s["max_seq_length"] = run_length(finetune_variants()[w.ftrun]["run"]) or 128
    for key in FINETUNE_FLAGS:
        args += _flag(key, s[key])
    return " ".join(q(a) for a in args)


def finetune_targets(wildcards):
    """Everything the `finetune` target brings; without GLUE data, the fix (before any job)."""
    f = config["finetune"]
    if not f["data_dir"] and not f["hub"]:
        raise WorkflowError(
            "finetune: no GLUE data. Download GLUE (e.g. the usual download_glue_data.py, which "
            "writes <dir>/<TASK>/{train,dev,test}.tsv) and pass it: snakemake finetune "
            "--configfile presets/glue.yaml --config finetune='{data_dir: /path/to/glue}' "
            "(or finetune='{hub: true}' online, with `pip install datasets`)"
        )
    if f["data_dir"] and f["hub"]:
        raise WorkflowError("finetune: set data_dir or hub: true, not both")
    names = list(finetune_variants())
    budget = (
        ["results/glue/budget.md", "results/plots/glue_budget.png"]
        if budget_variants()
        else []
    )
    return (
        [f"results/glue/{n}.md" for n in names]
        + ["results/glue/summary.md", "results/plots/glue.png"]
        + budget
    )


def budget_variants():
    """The fine-tuned variants along the time budgets, each with the run's own final model:
    {variant: model dir whose trainer_state.json gives the hours}."""
    out = {}
    for name, v in finetune_variants().items():
        if v["marker"] is not None:
            out[v["run"]] = f"results/pretrain/{v['run']}/final"
            out[name] = f"results/pretrain/{v['run']}/marker-{v['marker']:g}"
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def glue_results(wildcards):
    """Every eval_results.json of one fine-tuned run (all tasks x seeds)."""
    f = config["finetune"]
    return [
        f"results/finetune/{wildcards.ftrun}/{t}/seed{s}/eval_results.json"
        for t in f["tasks"]
        for s in f["seeds"]
    ]


# ---------------------------------------------------------------------------- model cards
def export_inputs(wildcards):
    """What a run's card reports: its model, evaluation and, when GLUE is configured, its GLUE table."""
    f = config["finetune"]
    inputs = {
        "model": f"results/pretrain/{wildcards.run}/final/model.safetensors",
        "evaluation": f"results/evaluate/{wildcards.run}.json",
    }
    if f["data_dir"] or f["hub"]:
        inputs["glue"] = f"results/glue/{wildcards.run}.csv"
    return inputs


def export_args(wildcards, input):
    e = config["export"]
    args = ["--evaluation", input.evaluation, "--datasets", *e["datasets"]]
    args += [
        "--language",
        e["language"],
        "--license",
        e["license"],
        "--name",
        wildcards.run,
    ]
    args += ["--glue", input.glue] if "glue" in input.keys() else []
    return " ".join(q(a) for a in args)
