"""bigs.evaluate: token-weighted masked-LM metrics against a hand computation, both logits
layouts (BERT / BiGS full head (B, L, V), BiGS masked head (n, V)), fill-mask probes, the CLI on
a tiny checkpoint, and bad inputs (missing dir, another size, no test shards, unknown tokenizer)."""

import csv
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from bigs.data.format import write_shard
from bigs.errors import BigsError
from bigs.evaluate import evaluate_mlm, fill_mask, main
from bigs.tokenizer import BUNDLED_VOCAB, load_tokenizer

V, L = 99, 7  # odd tiny sizes (HF test style)


def _tiny_bert(vocab=V):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=16,
    )
    return BertForMaskedLM(cfg)


def _tiny_bigs(vocab=V, **kw):
    from bigs.model import BiGSConfig, BiGSForMaskedLM

    torch.manual_seed(0)
    cfg = BiGSConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=37,
        max_position_embeddings=16,
        num_ssm=8,
        **kw,
    )
    return BiGSForMaskedLM(cfg)


def _batches():
    """Two batches with very different mask counts (1 vs 6), so a mean of batch means is wrong."""
    g = torch.Generator().manual_seed(1)
    out = []
    for b, n_masked in ((3, 1), (5, 6)):
        ids = torch.randint(5, V, (b, L), generator=g)
        labels = torch.full((b, L), -100)
        flat = torch.randperm(b * L, generator=g)[:n_masked]
        labels.view(-1)[flat] = torch.randint(5, V, (n_masked,), generator=g)
        out.append(
            {
                "input_ids": ids,
                "attention_mask": torch.ones(b, L, dtype=torch.long),
                "token_type_ids": torch.zeros(b, L, dtype=torch.long),
                "labels": labels,
            }
        )
    return out


def _reference(model, batches):
    """Σ -log p(label) over every labelled token, from full (B, L, V) logits, one example at a time."""
    model.eval()
    nll, correct, n, batch_means = 0.0, 0, 0, []
    with torch.no_grad():
        for batch in batches:
            b_nll = 0.0
            for i in range(batch["input_ids"].shape[0]):
                logits = (
                    model(input_ids=batch["input_ids"][i : i + 1], attention_mask=batch["attention_mask"][i : i + 1])
                    .logits[0]
                    .double()
                )  # (L, V)
                logp = logits.log_softmax(-1)
                for t in range(L):
                    y = int(batch["labels"][i, t])
                    if y != -100:
                        b_nll -= float(logp[t, y])
                        correct += int(logits[t].argmax() == y)
                        n += 1
            nll += b_nll
            batch_means.append(b_nll / int((batch["labels"] != -100).sum()))
    return nll / n, correct / n, n, sum(batch_means) / len(batch_means)


@pytest.mark.parametrize("make", [_tiny_bert, _tiny_bigs], ids=["bert", "bigs-masked-head"])
def test_evaluate_mlm_is_token_weighted(make):
    model = make()
    batches = _batches()
    loss, acc, n, mean_of_means = _reference(model, batches)
    model.train()
    res = evaluate_mlm(model, batches, "cpu")
    assert model.training  # train mode restored
    assert res["eval_tokens"] == n == 7 and res["eval_batches"] == 2
    assert res["eval_loss"] == pytest.approx(loss, rel=1e-5)
    assert abs(res["eval_loss"] - mean_of_means) > 1e-3  # the test can tell the two apart
    assert res["eval_accuracy"] == pytest.approx(acc)
    assert res["eval_perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    # max_batches: only the first batch (1 token)
    one = evaluate_mlm(model, batches, torch.device("cpu"), max_batches=1)
    assert one["eval_tokens"] == 1 and one["eval_batches"] == 1


def test_bigs_masked_and_full_head_agree():
    masked, full = _tiny_bigs(mlm_head="masked"), _tiny_bigs(mlm_head="full")
    full.load_state_dict(masked.state_dict())
    batch = _batches()[1]
    with torch.no_grad():
        assert masked.eval()(**batch).logits.dim() == 2 and full.eval()(**batch).logits.dim() == 3
    a, b = evaluate_mlm(masked, [batch], "cpu"), evaluate_mlm(full, [batch], "cpu")
    assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-6) and a["eval_tokens"] == b["eval_tokens"] == 6


def test_evaluate_mlm_rejects_no_labels():
    batch = dict(_batches()[0], labels=torch.full((3, L), -100))
    with pytest.raises(BigsError, match="no labelled"):
        evaluate_mlm(_tiny_bert(), [batch], "cpu")
    with pytest.raises(BigsError, match="no batches"):
        evaluate_mlm(_tiny_bert(), [], "cpu")


def test_bundled_tokenizer_and_fill_mask(tmp_path):
    tok = load_tokenizer(None, tmp_path, 30522)  # empty dir -> bundled vocab
    assert len(tok) == 30522
    assert tok("Paris is the [MASK] of France.")["input_ids"] == [101, 3000, 2003, 1996, 103, 1997, 2605, 1012, 102]
    model = _tiny_bigs(vocab=30522)
    out = fill_mask(model, tok, ["Paris is the [MASK] of France.", "[MASK] is the [MASK] of France."], "cpu", top_k=4)
    assert [len(o["masks"]) for o in out] == [1, 2]
    assert out[0]["masks"][0]["position"] == 4
    for o in out:
        for m in o["masks"]:
            probs = [p["probability"] for p in m["predictions"]]
            assert len(probs) == 4 and probs == sorted(probs, reverse=True)
            assert 0 < sum(probs) <= 1 + 1e-6
            assert all(tok.convert_ids_to_tokens(p["token_id"]) == p["token"] for p in m["predictions"])
    # the probabilities are the softmax of the full-head logits at the [MASK]
    with torch.no_grad():
        ids = torch.tensor([[101, 3000, 2003, 1996, 103, 1997, 2605, 1012, 102]])
        ref = model.eval()(input_ids=ids).logits[0, 4].softmax(-1).max().item()
    assert out[0]["masks"][0]["predictions"][0]["probability"] == pytest.approx(ref, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# the CLI on a tiny checkpoint
# ---------------------------------------------------------------------------------------------
def _shards(d, splits=("test",), n=11, seq=13, preds=3, seed=0):
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    for k in range(2):
        ids = rng.integers(1000, 3000, (n, seq)).astype(np.int32)
        ids[:, 0], ids[:, -1] = 101, 102
        pos = np.sort(np.stack([rng.choice(np.arange(1, seq - 1), preds, replace=False) for _ in range(n)]), 1)
        pos[::3, -1] = 0  # padding slots: not labelled
        mids = np.where(pos > 0, rng.integers(1000, 3000, (n, preds)), 0)
        for split in splits:
            write_shard(
                d / f"{split}_shard_{k}.hdf5",
                input_ids=ids,
                input_mask=np.ones((n, seq), np.int8),
                segment_ids=np.zeros((n, seq), np.int8),
                masked_lm_positions=pos.astype(np.int32),
                masked_lm_ids=mids.astype(np.int32),
            )
    return d


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    d = root / "run" / "checkpoint-40"
    _tiny_bigs(vocab=30522).save_pretrained(d)
    (d / "trainer_state.json").write_text(json.dumps({"step": 42}))
    return d, _shards(root / "shards", splits=("train", "test"))


def test_cli_matches_library(ckpt, tmp_path):
    from bigs.data.format import ShardDataset, list_shards
    from bigs.evaluate import load_model

    d, shards = ckpt
    out = tmp_path / "eval" / "run.json"
    assert (
        main(["--model", str(d), "--dataset_path", str(shards), "-o", str(out), "--batch_size", "4", "--top_k", "3"])
        == 0
    )
    res = json.loads(out.read_text())
    assert res["step"] == 42 and res["model_type"] == "BiGS" and res["test_shards"] == 2
    # 2 shards x 11 instances, 3 slots each, every third row has one padding slot -> 2*(33-4) tokens
    assert res["metrics"]["eval_tokens"] == 58
    assert res["metrics"]["eval_batches"] == 6  # ceil(11/4) per shard, batches never span shards
    ref = torch.utils.data.ConcatDataset([ShardDataset(p) for p in list_shards(shards, "test")])
    direct = evaluate_mlm(load_model(d), torch.utils.data.DataLoader(ref, batch_size=22), "cpu")
    assert res["metrics"]["eval_loss"] == pytest.approx(direct["eval_loss"], rel=1e-5)
    assert res["metrics"]["eval_accuracy"] == pytest.approx(direct["eval_accuracy"])
    assert res["probes"] and all(len(m["predictions"]) == 3 for p in res["probes"] for m in p["masks"])
    md = out.with_suffix(".md").read_text()
    assert "(step 42)" in md and "Paris is the [MASK] of France." in md
    assert sorted(x.name for x in out.parent.iterdir()) == ["run.json", "run.md"]  # no temp files left


def _expect_error(args, match, out):
    with pytest.raises(BigsError, match=match) as exc:
        main(args + ["-o", str(out)])
    assert not out.exists() and not out.with_suffix(".md").exists()
    return str(exc.value)


def test_bad_model_dirs(ckpt, tmp_path):
    d, shards = ckpt
    out = tmp_path / "o.json"
    common = ["--dataset_path", str(shards)]
    msg = _expect_error(["--model", str(tmp_path / "nope")] + common, "no such checkpoint directory", out)
    assert "nope" in msg
    _expect_error(["--model", str(tmp_path)] + common, "config.json: missing", out)

    cfg = json.loads((d / "config.json").read_text())
    wider = r"embeddings.LayerNorm.bias: checkpoint has shape \(32,\) but config.json implies \(48,\).*another size"
    for name, change, match in (
        ("wider", {"hidden_size": 48}, wider),
        ("deeper", {"num_hidden_layers": 3}, "weights missing.*bigs.encoder.layer.2"),
        ("shallower", {"num_hidden_layers": 1}, "unexpected weights.*layer.1"),
    ):
        bad = tmp_path / name
        shutil.copytree(d, bad)
        (bad / "config.json").write_text(json.dumps(dict(cfg, **change)))
        assert str(bad) in _expect_error(["--model", str(bad)] + common, match, out)


def test_published_style_checkpoint_loads(ckpt, tmp_path):
    """The PyTorch port's files carry a persistent `position_ids` buffer: ignored, weights equal."""
    from safetensors.torch import load_file, save_file

    from bigs.evaluate import load_model

    d, _ = ckpt
    pub = tmp_path / "BiGS_128"
    shutil.copytree(d, pub)
    sd = load_file(str(pub / "model.safetensors"))
    sd["bigs.embeddings.position_ids"] = torch.arange(16)[None]
    save_file(sd, str(pub / "model.safetensors"), metadata={"format": "pt"})
    a, b = load_model(pub).state_dict(), load_model(d).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_data_probes_and_tokenizer(ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d, shards = ckpt
    out = tmp_path / "o.json"
    train_only = _shards(tmp_path / "train_only", splits=("train",))
    _expect_error(["--model", str(d), "--dataset_path", str(train_only)], "no test shards", out)
    probes = tmp_path / "probes.txt"
    probes.write_text("# comment\nParis is the [MASK] of France.\nno mask here\n")
    msg = _expect_error(
        ["--model", str(d), "--dataset_path", str(shards), "--probes", str(probes)], "no \\[MASK\\]", out
    )
    assert f"{probes}:3" in msg
    msg = _expect_error(
        ["--model", str(d), "--dataset_path", str(shards), "--tokenizer", "no-such-org/no-such-tokenizer"],
        "--tokenizer: not a file or directory",
        out,
    )
    assert "offline" in msg
    tiny_vocab = tmp_path / "vocab.txt"
    tiny_vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    _expect_error(
        ["--model", str(d), "--dataset_path", str(shards), "--tokenizer", str(tiny_vocab)],
        "maps 'the' to \\[UNK\\]",
        out,
    )
    assert BUNDLED_VOCAB.is_file()


@pytest.mark.slow
def test_cli_equals_trainer_eval_on_a_real_tiny_run(tmp_path):
    """Train 4 steps with bigs.pretrain (eval at 4), then the CLI on final/ gives the trainer's own
    eval numbers and step; bigs.plots on the real run reports the same final eval."""
    from bigs import plots

    data = _shards(tmp_path / "shards", splits=("train", "test"))
    run = tmp_path / "run"
    flags = dict(
        output_dir=run,
        dataset_path=data,
        max_seq_length=13,
        max_predictions_per_seq=3,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        n_layers=2,
        hidden_size=32,
        intermediate_size=48,
        num_total_train_steps=4,
        warmup_steps=2,
        logging_steps=1,
        save_steps=4,
        eval_steps=4,
        learning_rate=3e-3,
        seed=7,
    )
    r = subprocess.run(
        [sys.executable, "-m", "bigs.pretrain", *[f"--{k}={v}" for k, v in flags.items()]],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    evals = [e for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if e["kind"] == "eval"]
    assert [e["step"] for e in evals] == [4]
    probes = tmp_path / "probes.txt"
    probes.write_text("Paris is the [MASK] of France.\n")
    out = tmp_path / "eval" / "final.json"
    main(
        [
            "--model",
            str(run / "final"),
            "--dataset_path",
            str(data),
            "-o",
            str(out),
            "--batch_size",
            "4",
            "--probes",
            str(probes),
        ]
    )
    res = json.loads(out.read_text())
    assert res["step"] == 4  # final/ has no trainer_state.json: the run's last logged step
    for k in ("eval_loss", "eval_accuracy", "eval_perplexity"):
        assert res["metrics"][k] == pytest.approx(evals[0][k], rel=1e-6), k
    assert res["metrics"]["eval_tokens"] == evals[0]["eval_tokens"] == 58

    plots.main(["--runs", str(run), "-o", str(tmp_path / "plots"), "--eval", str(out)])
    row = next(csv.DictReader(open(tmp_path / "plots" / "summary.csv")))
    assert int(row["final_step"]) == 4 and float(row["eval_loss"]) == pytest.approx(evals[0]["eval_loss"])
    assert (tmp_path / "plots" / "train_loss.png").stat().st_size > 10_000
