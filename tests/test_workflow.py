"""The Snakemake workflow: config validation, dry runs of every preset, the seed's
flags in the paper presets, the embedded default end to end (trimmed), and reruns.

Fast tests use `snakemake -n` on a copy of the workflow in a temp dir; the end-to-end test
(marked slow, ~2-4 min on 2 cores) runs the bundled Wikipedia sample through every stage with a
tiny model, then checks which jobs a changed setting reruns.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY, copy_workflow, job_counts, shell_commands, smk, write_yaml

ROOT = REPO

# The original BiGS pre-training README (jxiw/BiGS), GPU command (the TPU command has the same flags).
SEED_COMMAND = """python pretrain.py --output_dir=BiGS_100k/ --dataset_path=PATH_OF_YOUR_TRAIN_CORPUS/
--model_type=s4-bert --max_seq_length=128 --weight_decay=0.05 --per_device_train_batch_size=131
--per_device_eval_batch_size=131 --learning_rate=6e-4 --overwrite_output_dir --max_train_shards=3000
--adam_beta1=0.9 --adam_beta2=0.98 --logging_steps=100 --save_steps=5000 --eval_steps=8000 --n_layers=23
--warmup_steps=2000 --num_total_train_steps=100000 --hidden_dropout_prob=0.1 --hidden_size=1024
--intermediate_size=3072 --schedule_type=cosine"""


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("wf"))


# ---------------------------------------------------------------------------------- dry runs
PRESETS = sorted(p.stem for p in (ROOT / "presets").glob("*.yaml"))
# Each preset alone on the embedded default, and the compositions the README names.
COMBOS = [
    [], *([p] for p in PRESETS), ["paper-100k", "gpu"], ["paper-100k", "tpu"], ["compare", "glue"],
    ["paper-100k", "budget", "gpu"],
    ["paper-100k", "paper-corpus", "long-context", "gpu"],
]  # fmt: skip


def test_presets_exist():
    assert {
        "paper-100k",
        "gpu",
        "tpu",
        "prebuilt-corpus",
        "compare",
        "glue",
        "budget",
        "paper-corpus",
        "long-context",
    } <= set(PRESETS)


def test_long_context_preset_chains_the_runs_with_the_published_token_counts(wf):
    from bigs.pretrain import parse_args

    # on the embedded sample (a small DAG; the paper corpus's version is one of COMBOS)
    out = smk(wf, "-n", "-p", "pretrain", "--configfile", "presets/long-context.yaml", "presets/gpu.yaml").stdout
    cmds = {Path(a.output_dir).name: a for a in (parse_args(c[6:]) for c in shell_commands(out, "scripts/pretrain.sh"))}
    assert cmds["BiGS_128"].model_name_or_path is None and cmds["BiGS_128"].max_seq_length == 128
    tokens = {}
    for run, parent, L in (
        ("BiGS_512", "BiGS_128", 512),
        ("BiGS_1024", "BiGS_512", 1024),
        ("BiGS_4096", "BiGS_1024", 4096),
    ):
        a = cmds[run]
        assert a.model_name_or_path == f"results/pretrain/{parent}/final" and a.max_seq_length == L
        tokens[L] = a.num_total_train_steps * a.global_batch_size * L
    assert tokens[512] == pytest.approx(11e9, rel=0.01) and tokens[1024] == pytest.approx(2e9, rel=0.02)
    assert tokens[4096] < 1e9  # not published: under the rounding of "≈110B" for both
    masks = shell_commands(out, "bigs.data.samples mask")
    preds = {int(c[c.index("--max_seq_length") + 1]): int(c[c.index("--max_predictions_per_seq") + 1]) for c in masks}
    assert preds == {128: 20, 512: 80, 1024: 160, 4096: 640}


def test_the_main_target_builds_and_inspects_only_the_sample_sets_its_runs_train_on(wf):
    write_yaml(wf / "sets.yaml", {"samples": {"sets": [{"name": "L512", "max_seq_length": 512}]}})
    out = smk(wf, "-n", "-p", "pretrain", "--configfile", "sets.yaml").stdout
    assert job_counts(out)["inspect_dataset"] == 1
    assert {c[c.index("--max_seq_length") + 1] for c in shell_commands(out, "bigs.data.samples mask")} == {"128"}
    out = smk(wf, "-n", "-p", "samples", "--configfile", "sets.yaml").stdout  # asked for: every set
    assert {c[c.index("--max_seq_length") + 1] for c in shell_commands(out, "bigs.data.samples mask")} == {"128", "512"}


@pytest.mark.parametrize("presets", COMBOS, ids=lambda c: "+".join(c) or "default")
def test_dry_run_pretrain(wf, presets):
    extra = ["--configfile", *(f"presets/{p}.yaml" for p in presets)] if presets else []
    counts = job_counts(smk(wf, "-n", "pretrain", *extra).stdout)
    n_runs = 2 if "compare" in presets else 4 if "long-context" in presets else 1
    n_sets = 4 if "long-context" in presets else 1  # L128, and L512/1024/4096 masked from the same tokens
    assert counts["train_run"] == n_runs and counts["evaluate_run"] == n_runs and counts["plot_runs"] == 1
    assert counts["inspect_dataset"] == n_sets  # the main target validates the data it trains on
    if "tpu" in presets:  # streamed from gs://: no download, no data-building jobs
        assert set(counts) == {"train_run", "inspect_dataset", "evaluate_run", "plot_runs", "pretrain"}
    elif "paper-corpus" in presets:  # the paper's corpus from raw text: the dump fetched once, 384 text shards
        assert counts["fetch_raw"] == 1 and "fetch_prebuilt" not in counts and counts["process_corpus"] == 1
        assert counts["tokenize_shard"] == 256 + 128 and counts["mask_shard"] == (256 + 128) * 10 * n_sets
    elif {"paper-100k", "prebuilt-corpus"} & set(presets):  # the prebuilt corpus is downloaded once
        assert counts["fetch_prebuilt"] == 1 and "mask_shard" not in counts
    else:  # the embedded sample: every data stage
        assert counts["process_corpus"] == 1 and counts["shard_corpus"] == 1
        assert counts["tokenize_shard"] == 4 + 1 and counts["mask_shard"] == (4 + 1) * 2 * n_sets


@pytest.mark.parametrize("target", ["corpus", "shards", "samples", "inspect", "evaluate", "plots", "all"])
def test_named_targets(wf, target):
    counts = job_counts(smk(wf, "-n", target).stdout)
    assert counts[target] == 1
    assert ("train_run" in counts) == (target in ("evaluate", "plots", "all"))


def test_mask_jobs_number_shards_like_bigs_samples(wf):
    """k of {split}_shard_{k}.hdf5 = bigs.data.samples.output_index(shard, copy, num_shards)."""
    from bigs.data.samples import output_index

    cmds = shell_commands(smk(wf, "-n", "-p", "samples").stdout, "bigs.data.samples mask")
    assert len(cmds) == 10
    seen = set()
    for cmd in cmds:
        flags = dict(zip(cmd[4::2], cmd[5::2]))
        k = int(re.search(r"_shard_(\d+)\.hdf5$", flags["--output"]).group(1))
        assert output_index(int(flags["--shard_index"]), int(flags["--copy"]), int(flags["--num_shards"])) == k
        split = "training" if "/train_shard_" in flags["--output"] else "test"
        assert Path(flags["--tokens"]).name == f"{split}{flags['--shard_index']}.npz"
        seen.add(flags["--output"])
    assert len(seen) == 10


@pytest.mark.parametrize("machine", ["gpu", "tpu"])
def test_paper_preset_runs_the_seed_command(wf, machine):
    """bigs.pretrain parses the generated flags to exactly the seed command's settings."""
    from bigs.pretrain import parse_args

    out = smk(wf, "-n", "-p", "pretrain", "--configfile", "presets/paper-100k.yaml", f"presets/{machine}.yaml").stdout
    (cmd,) = shell_commands(out, "scripts/pretrain.sh")
    generated = parse_args(cmd[6:])  # --resume is added by scripts/pretrain.sh
    seed = parse_args(SEED_COMMAND.split()[2:])
    additions = {
        "global_batch_size": 1048,
        "precision": "bf16",
        "eval_batches": 200,
    }  # the paper's batch, bf16, bounded eval
    from_data = ("max_seq_length",)  # not passed: bigs.pretrain reads it from the downloaded shards (128)
    differ = {
        k: (v, getattr(generated, k))
        for k, v in vars(seed).items()
        if k not in ("output_dir", "dataset_path", "device", *additions, *from_data) and getattr(generated, k) != v
    }
    assert not differ, f"{machine}: flags differ from the seed command (seed, generated): {differ}"
    assert {k: getattr(generated, k) for k in additions} == additions and generated.max_seq_length is None
    assert generated.output_dir.endswith("BiGS_100k")
    if machine == "tpu":
        assert generated.device == "xla" and generated.dataset_path.startswith("gs://")
    else:
        assert generated.device == "cuda" and generated.dataset_path == "resources/prebuilt/bigs-prebuilt"
    for token in SEED_COMMAND.split()[2:]:  # and literally: each seed flag appears with its value
        key, _, value = token.partition("=")
        if key not in ("--output_dir", "--dataset_path", *(f"--{k}" for k in from_data)):
            match = [c for c in cmd if c.split("=")[0] == key]
            assert match, f"{key} missing"
            if value:
                assert (
                    float(match[0].split("=")[1]) == float(value)
                    if re.match(r"[\d.e-]+$", value)
                    else match[0] == token
                )


def test_budget_preset_trains_the_paper_model_to_a_time_budget(wf):
    from bigs.pretrain import parse_args

    out = smk(
        wf, "-n", "-p", "pretrain", "--configfile", *(f"presets/{p}.yaml" for p in ("paper-100k", "budget", "gpu"))
    )
    (cmd,) = shell_commands(out.stdout, "scripts/pretrain.sh")
    a = parse_args(cmd[6:])
    assert (a.total_training_time, a.finetune_time_markers, a.warmup_proportion) == (24.0, [0.25, 0.5, 0.75], 0.02)
    assert (a.n_layers, a.hidden_size, a.global_batch_size) == (23, 1024, 1048) and a.output_dir.endswith("BiGS_24h")


def test_glue_along_the_budget_fine_tunes_every_marker_model(wf, tmp_path):
    """Each model kept along the budget is a fine-tuned variant <run>-at-<f>, started from marker-<f>/;
    the budget table and plot put their GLUE averages against the hours."""
    glue = tmp_path / "glue"
    (glue / "SST-2").mkdir(parents=True)
    for split in ("train", "dev"):
        (glue / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n")
    cfg = {
        **TINY,
        "pretrain": {**TINY["pretrain"], "total_training_time": 0.01, "finetune_time_markers": [0.5, 0.25]},
        "runs": [{"name": "bigs-tiny"}],
        "finetune": {"data_dir": str(glue), "tasks": ["sst2"], "seeds": [1], "random_init_control": False},
    }
    write_yaml(wf / "budget.yaml", cfg)
    out = smk(wf, "-n", "-p", "finetune", "--configfile", "budget.yaml").stdout
    counts = job_counts(out)
    assert counts["finetune_task"] == 3 and counts["glue_budget"] == 1 and counts["train_run"] == 1
    starts = sorted(
        next(x for x in c if x.startswith("--model_name_or_path=")).split("=", 1)[1]
        for c in shell_commands(out, "bigs.finetune")
    )
    assert starts == [f"results/pretrain/bigs-tiny/{d}" for d in ("final", "marker-0.25", "marker-0.5")]
    (train,) = shell_commands(out, "scripts/pretrain.sh")
    assert "--finetune_time_markers=0.25,0.5" in train and "--total_training_time=0.01" in train


def test_gpu_resource_launches_torchrun(wf):
    out = smk(wf, "-n", "-p", "pretrain", "--set-resources", "train_run:gpu=4").stdout
    (cmd,) = shell_commands(out, "scripts/pretrain.sh")
    assert cmd[4] == "4"  # NGPUS argument of scripts/pretrain.sh
    assert (
        'torchrun --standalone --nproc_per_node="$ngpus" -m bigs.pretrain'
        in (ROOT / "scripts" / "pretrain.sh").read_text()
    )


# ---------------------------------------------------------------------------------- bad config
BAD = [
    ({"pretrain": {"hidden_sise": 64}}, "unknown key pretrain.hidden_sise"),
    ({"bogus": 1}, "unknown key bogus"),
    ({"runs": [{"name": "x", "lr": 1}]}, "unknown key runs[0].lr"),
    ({"pretrain": {"learning_rate": "fast"}}, "pretrain.learning_rate: 'fast' is not of type 'number'"),
    ({"pretrain": {"learning_rate": "6e-4"}}, "pretrain.learning_rate"),  # YAML 1.1 reads this as a string
    ({"pretrain": {"save_steps": 0}}, "pretrain.save_steps: 0 is less than the minimum of 1"),
    ({"pretrain": {"eval_steps": 0}}, "pretrain.eval_steps: 0 is less than the minimum of 1"),
    ({"pretrain": {"num_total_train_steps": -5}}, "pretrain.num_total_train_steps: -5 is less than"),
    ({"pretrain": {"per_device_train_batch_size": 0}}, "pretrain.per_device_train_batch_size: 0 is less than"),
    ({"runs": [{"name": "b", "per_device_eval_batch_size": 0}]}, "runs[0].per_device_eval_batch_size"),
    ({"pretrain": {"warmup_steps": 5000}}, "warmup_steps"),
    ({"samples": {"max_seq_length": 100000}}, "samples.max_seq_length: 100000 is greater than the maximum"),
    ({"pretrain": {"max_seq_length": 512}}, "unknown key pretrain.max_seq_length"),  # said once, in samples:
    ({"runs": [{"name": "b", "hidden_size": "big"}]}, "runs[0].hidden_size: 'big' is not of type 'integer'"),
    ({"samples": {"masked_lm_prob": 1.5}}, "samples.masked_lm_prob"),
    ({"shards": {"num_train_shards": 0}}, "shards.num_train_shards"),
    ({"corpus": {"source": "ftp"}}, "corpus.source"),
    ({"runs": []}, "runs"),
    ({"runs": [{"name": "a"}, {"name": "a"}]}, "duplicate run name"),
    ({"corpus": {"prebuilt": {"stream": True}, "source": "prebuilt"}}, "corpus.prebuilt.stream"),
    (
        {"corpus": {"raw": {"sources": [{"name": "w", "type": "wiki", "url": "https://h/x.xml.bz2"}]}}},
        "corpus.raw.sources[w]: a url needs md5 or md5_url",
    ),
    (
        {"samples": {"sets": [{"name": "s512", "max_seq_length": 512}, {"name": "s512"}]}},
        "duplicate sample set name(s) ['s512']",
    ),
    ({"samples": {"sets": [{"name": "L128"}]}}, "duplicate sample set name(s) ['L128']"),
    (
        {"runs": [{"name": "b", "finetune_time_markers": [0.5]}]},
        "runs[b]: finetune_time_markers needs total_training_time",
    ),
]


@pytest.mark.parametrize("overlay,message", BAD, ids=[m for _, m in BAD])
def test_bad_config_fails_before_any_job(wf, overlay, message):
    write_yaml(wf / "bad.yaml", overlay)
    p = smk(wf, "-n", "pretrain", "--configfile", "bad.yaml", check=False)
    assert p.returncode != 0
    assert "Invalid config" in p.stdout and message in p.stdout, p.stdout[-3000:]
    assert "Job stats" not in p.stdout and "rule " not in p.stdout


METACHAR = [
    {"runs": [{"name": "x; touch PWNED"}]},
    {"runs": [{"name": "$(touch PWNED)"}]},
    {"corpus": {"name": "a`touch PWNED`"}},
    {"corpus": {"raw": {"path": "data/x.bz2; touch PWNED"}}},
    {"corpus": {"raw": {"path": "-f"}}},
    {"samples": {"vocab_file": "v.txt && touch PWNED"}},
    {"evaluate": {"probes": "p.txt|touch PWNED"}},
    {"corpus": {"source": "prebuilt", "prebuilt": {"url": "gs://b/p$(touch PWNED)"}}},
]


@pytest.mark.parametrize("overlay", METACHAR, ids=lambda o: json.dumps(o))
def test_shell_metacharacters_are_rejected(wf, overlay):
    write_yaml(wf / "evil.yaml", overlay)
    p = smk(wf, "--cores", "1", "pretrain", "--configfile", "evil.yaml", check=False)
    assert p.returncode != 0 and "Invalid config" in p.stdout and "is not allowed" in p.stdout, p.stdout[-2000:]
    assert not (wf / "PWNED").exists()


def test_allowed_odd_characters_reach_the_shell_quoted(wf):
    """Characters the schema allows but a shell treats specially (= , @ % + ? &) stay literal."""
    url = "https://example.org/c?a=1&b=2,x@y%z+w"
    write_yaml(wf / "odd.yaml", {"corpus": {"source": "prebuilt", "prebuilt": {"url": url}}})
    out = smk(wf, "-n", "-p", "corpus", "--configfile", "odd.yaml").stdout
    (cmd,) = shell_commands(out, "bigs.data.fetch")
    assert cmd[cmd.index("--source") + 1] == url


# ---------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The embedded default, trimmed (TINY), for real: every stage on the bundled sample."""
    wf = copy_workflow(tmp_path_factory.mktemp("e2e"))
    write_yaml(wf / "tiny.yaml", {**TINY, "runs": [{"name": "bigs-tiny"}]})
    out = smk(wf, "--cores", "2", "pretrain", "--configfile", "tiny.yaml").stdout  # the README's run command
    return wf, out


@pytest.mark.slow
def test_embedded_default_end_to_end(tiny_run):
    wf, out = tiny_run
    r = wf / "results"
    assert len(list((r / "shards" / "enwiki-sample").glob("*.txt"))) == 3
    assert sorted(p.name for p in (r / "samples" / "enwiki-sample-L128").glob("*.hdf5")) == [
        "test_shard_0.hdf5", "test_shard_1.hdf5",
        "train_shard_0.hdf5", "train_shard_1.hdf5", "train_shard_2.hdf5", "train_shard_3.hdf5",
    ]  # fmt: skip
    final = r / "pretrain" / "bigs-tiny" / "final"
    assert (final / "model.safetensors").stat().st_size > 0 and (final / "config.json").is_file()
    lines = [json.loads(x) for x in (final / "metrics.jsonl").read_text().splitlines()]
    assert max(x["step"] for x in lines if x["kind"] == "train") == 20
    assert any(x["kind"] == "eval" for x in lines)
    ev = json.loads((r / "evaluate" / "bigs-tiny.json").read_text())["metrics"]
    assert 0 <= ev["eval_accuracy"] <= 1 and ev["eval_tokens"] > 0 and ev["eval_perplexity"] > 1
    assert (r / "evaluate" / "bigs-tiny.md").is_file()
    for png in ("train_loss", "learning_rate", "eval_vs_step", "eval_vs_tokens", "throughput"):
        assert (r / "plots" / f"{png}.png").stat().st_size > 0
    assert "bigs-tiny" in (r / "plots" / "summary.md").read_text()
    stats = json.loads((r / "inspect" / "enwiki-sample-L128.json").read_text())  # the main target inspects the data
    assert stats["total"]["shards"] == 6 and stats["total"]["instances"] > 0
    for rule in ("process_corpus", "shard_corpus", "tokenize_shard", "mask_shard", "train_run"):
        assert any((wf / "logs" / rule).rglob("*.log")), f"no log for {rule}"


@pytest.mark.slow
def test_up_to_date_after_the_run_and_the_report_builds(tiny_run):
    """The README's commands in the order a user types them: run, dry run, report."""
    wf, _ = tiny_run
    for target in ("pretrain", "all"):
        out = smk(wf, "-n", target, "--configfile", "tiny.yaml").stdout
        assert "Nothing to be done" in out, out[-2000:]
    smk(wf, "--report", "report.html", "--configfile", "tiny.yaml")
    html = (wf / "report.html").read_text(errors="replace")
    assert len(html) > 10_000 and "eval_vs_step.png" in html and "enwiki-sample-L128.json" in html


@pytest.mark.slow
def test_export_writes_every_runs_card_and_the_report_links_it(tiny_run):
    from huggingface_hub import ModelCard

    wf, _ = tiny_run
    counts = job_counts(smk(wf, "--cores", "2", "export", "--configfile", "tiny.yaml").stdout)
    assert counts == {"export_run": 1, "export": 1}  # after the evaluation the pretrain target made
    card = ModelCard.load(wf / "results/pretrain/bigs-tiny/final/README.md")
    assert (
        card.data.pipeline_tag == "fill-mask"
        and "bigs-tiny" in card.text
        and "bigs.evaluate on 2 test shards" in card.text
    )
    smk(wf, "--report", "report.html", "export", "--configfile", "tiny.yaml")
    assert "README.md" in (wf / "report.html").read_text(errors="replace")  # the card, linked


RERUNS = [
    # changed setting -> the rules that must rerun (and nothing else)
    ({"samples": {"masked_lm_prob": 0.2}}, {"mask_shard", "inspect_dataset", "train_run", "evaluate_run", "plot_runs"}),
    ({"samples": {"vocab_file": "bigs/data/vocab/bert-large-uncased-vocab.txt"}},
     {"tokenize_shard", "mask_shard", "inspect_dataset", "train_run", "evaluate_run", "plot_runs"}),
    ({"shards": {"frac_test": 0.2}},
     {"shard_corpus", "tokenize_shard", "mask_shard", "inspect_dataset", "train_run", "evaluate_run", "plot_runs"}),
    ({"pretrain": {"logging_steps": 10}}, {"train_run", "evaluate_run", "plot_runs"}),
    ({"pretrain": {"learning_rate": 1.0e-3}}, {"train_run", "evaluate_run", "plot_runs"}),
    ({"evaluate": {"batch_size": 8}}, {"evaluate_run", "plot_runs"}),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("change,expected", RERUNS, ids=[json.dumps(c) for c, _ in RERUNS])
def test_changed_setting_reruns_only_affected_jobs(tiny_run, change, expected):
    wf, _ = tiny_run
    merged = json.loads(json.dumps(TINY))
    for section, values in change.items():
        merged.setdefault(section, {}).update(values)
    merged["runs"] = [{"name": "bigs-tiny"}]
    write_yaml(wf / "changed.yaml", merged)
    counts = job_counts(smk(wf, "-n", "all", "--configfile", "changed.yaml").stdout)
    counts.pop("all", None)
    assert set(counts) == expected, counts
    if "mask_shard" in expected:
        assert counts["mask_shard"] == 6  # every copy of every shard, but process_corpus never


# ---------------------------------------------------------------------------------- style
def test_lint_and_snakefmt_clean(wf):
    out = smk(wf, "--lint").stdout
    assert "Lints for" not in out, out[-3000:]
    files = ["Snakefile", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "rules").glob("*.smk"))]
    p = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *files], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]


# ------------------------------------------------------- resume (real runs; keep these last)
@pytest.mark.slow
def test_rerun_with_same_settings_resumes_and_keeps_history(tiny_run):
    """A failed/preempted/forced pretrain job continues from its last checkpoint."""
    wf, _ = tiny_run
    smk(wf, "--cores", "2", "pretrain", "--configfile", "tiny.yaml", "--forcerun", "train_run")
    log = (wf / "logs" / "train_run" / "bigs-tiny.log").read_text()
    assert "resume=auto" in log and "resumed from" in log, log[-2000:]
    lines = [json.loads(x) for x in (wf / "results/pretrain/bigs-tiny/final/metrics.jsonl").read_text().splitlines()]
    assert sorted({x["step"] for x in lines if x["kind"] == "train"}) == [5, 10, 15, 20]


@pytest.mark.slow
def test_changed_settings_start_over(tiny_run):
    wf, _ = tiny_run
    merged = json.loads(json.dumps(TINY))
    merged["pretrain"]["learning_rate"] = 1.0e-3
    merged["runs"] = [{"name": "bigs-tiny"}]
    write_yaml(wf / "lr.yaml", merged)
    smk(wf, "--cores", "2", "pretrain", "--configfile", "lr.yaml")
    log = (wf / "logs" / "train_run" / "bigs-tiny.log").read_text()
    assert "resume=never" in log and "resumed from" not in log, log[-2000:]
    assert list((wf / "results/pretrain/bigs-tiny").glob("previous-*/checkpoint-20"))
    lines = [json.loads(x) for x in (wf / "results/pretrain/bigs-tiny/final/metrics.jsonl").read_text().splitlines()]
    assert [x["lr"] for x in lines if x["kind"] == "train"][0] < 1.0e-3 + 1e-12
