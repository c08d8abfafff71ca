"""bigs.plots: curves and tables from a synthetic metrics.jsonl with known values; bad inputs."""

import csv
import json
import math

import pytest

from bigs.errors import BigsError
from bigs.plots import ema, main, read_metrics


def _write_run(path, lines, raw_tail=""):
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "metrics.jsonl", "w") as f:
        for rec in lines:
            f.write(json.dumps(rec) + "\n")
        f.write(raw_tail)
    return path


def _train(step, loss, lr=1e-3, tps=100.0, mfu=0.25):
    return {
        "kind": "train",
        "step": step,
        "tokens_seen": step * 1000,
        "wall_time": step * 2.0,
        "loss": loss,
        "lr": lr,
        "grad_norm": 1.0,
        "tokens_per_s": tps,
        "samples_per_s": 1.0,
        "mfu": mfu,
    }


def _eval(step, loss, acc):
    return {
        "kind": "eval",
        "step": step,
        "tokens_seen": step * 1000,
        "wall_time": step * 2.0,
        "eval_loss": loss,
        "eval_accuracy": acc,
        "eval_perplexity": math.exp(loss),
        "eval_tokens": 77,
    }


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_ema_is_bias_corrected():
    # s1 = 0.5*4 / (1-0.5) = 4; s2 = (0.25*4... ) -> (0.5*2 + 0.5*2) / 0.75 = 8/3
    out = ema([4.0, 2.0, None, 1.0], 0.5)
    assert out[0] == pytest.approx(4.0)
    assert out[1] == pytest.approx((0.5 * 0.5 * 4 + 0.5 * 2) / (1 - 0.25))
    assert out[2] is None
    assert out[3] == pytest.approx((0.5 * (0.25 * 4 + 0.5 * 2) + 0.5 * 1) / (1 - 0.125))


def test_plots_from_synthetic_runs(tmp_path):
    a = _write_run(
        tmp_path / "bigs",
        [
            _train(10, 9.0, tps=100.0),
            _train(20, 7.0, tps=300.0),
            _eval(20, 6.5, 0.125),
            # resumed from step 20: step 30 logged twice, the later line wins
            _train(30, 99.0),
            _train(30, 5.0, lr=5e-4, tps=200.0, mfu=None),
            _eval(30, 5.5, 0.25),
        ],
    )
    b = _write_run(tmp_path / "bert", [_train(10, 9.5, tps=50.0), _eval(10, 8.0, 0.0625)])
    (tmp_path / "bigs" / "config.json").write_text('{"max_position_embeddings": 512}')  # the length column
    out = tmp_path / "plots"
    assert main(["--runs", str(a), str(b), "--names", "BiGS", "BERT", "-o", str(out), "--smoothing", "0.5"]) == 0
    for png in ("train_loss", "learning_rate", "eval_vs_step", "eval_vs_tokens", "throughput"):
        assert (out / f"{png}.png").stat().st_size > 10_000
    assert not list(out.glob(".tmp-*"))

    rows = _read_csv(out / "plot_data.csv")

    def series(run, name, x_name="step"):
        return [
            (float(r["x"]), float(r["y"]))
            for r in rows
            if r["run"] == run and r["series"] == name and r["x_name"] == x_name
        ]

    assert series("BiGS", "train_loss") == [(10, 9.0), (20, 7.0), (30, 5.0)]
    ema_pts = series("BiGS", "train_loss_ema")
    assert ema_pts[1][1] == pytest.approx((0.25 * 9 + 0.5 * 7) / 0.75)
    assert series("BiGS", "lr")[-1] == (30, 5e-4)
    assert series("BiGS", "mfu") == [(10, 0.25), (20, 0.25)]  # null mfu is not plotted
    assert series("BiGS", "eval_perplexity") == [(20, pytest.approx(math.exp(6.5))), (30, pytest.approx(math.exp(5.5)))]
    assert series("BiGS", "eval_accuracy", "tokens_seen") == [(20000, 0.125), (30000, 0.25)]
    assert series("BERT", "eval_loss") == [(10, 8.0)]

    summary = {r["run"]: r for r in _read_csv(out / "summary.csv")}
    assert float(summary["BiGS"]["final_train_loss"]) == 5.0
    assert float(summary["BiGS"]["eval_loss"]) == 5.5
    assert float(summary["BiGS"]["tokens_seen"]) == 30000
    assert float(summary["BiGS"]["wall_time_s"]) == 60.0
    assert float(summary["BiGS"]["mean_tokens_per_s"]) == pytest.approx(200.0)  # (100+300+200)/3
    assert int(summary["BERT"]["final_step"]) == 10
    md = (out / "summary.md").read_text()
    assert "| BiGS | 512 | 30 | 5 |" in md and "| BERT | — | 10 |" in md


def test_default_names_and_eval_json(tmp_path):
    a = _write_run(tmp_path / "run-a", [_train(1, 3.0)])
    ev = tmp_path / "run-a.json"
    ev.write_text(
        json.dumps(
            {
                "model": "x",
                "step": 1,
                "metrics": {"eval_loss": 2.0, "eval_accuracy": 0.5, "eval_perplexity": math.exp(2.0), "eval_tokens": 9},
            }
        )
    )
    out = tmp_path / "p"
    main(["--runs", str(a), "-o", str(out), "--eval", str(ev)])
    assert _read_csv(out / "summary.csv")[0]["run"] == "run-a"
    # the workflow passes <run>/final/metrics.jsonl: still named after the run
    (a / "final").mkdir()
    (a / "final" / "metrics.jsonl").write_text((a / "metrics.jsonl").read_text())
    main(["--runs", str(a / "final" / "metrics.jsonl"), "-o", str(out)])
    assert _read_csv(out / "summary.csv")[0]["run"] == "run-a"
    assert float(_read_csv(out / "eval_summary.csv")[0]["eval_accuracy"]) == 0.5


def test_cut_off_last_line_is_skipped(tmp_path, capsys):
    run = _write_run(tmp_path / "r", [_train(1, 3.0), _train(2, 2.0)], raw_tail='{"kind": "tra')
    train, evals = read_metrics(run)
    assert [r["step"] for r in train] == [1, 2] and evals == []
    assert "incomplete last line" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, field",
    [
        (None, "metrics.jsonl: missing"),
        ("", "no 'train' or 'eval' lines"),
        (
            '{"kind": "train", "step": 1, "loss": 2.0}\nnot json\n{"kind": "train", "step": 3}\n',
            "metrics.jsonl:2: json: not valid JSON",
        ),
        ('{"kind": "train", "step": 1, "loss": "nan!"}\n', "metrics.jsonl:1: loss: expected a number"),
        ('{"kind": "eval", "eval_loss": 2.0}\n', "metrics.jsonl:1: step: missing"),
        ("[1, 2]\n", "metrics.jsonl:1: json: expected one JSON object"),
    ],
)
def test_bad_metrics_files(tmp_path, content, field):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "metrics.jsonl").write_text(content)
    out = tmp_path / "out"
    with pytest.raises(BigsError, match=field.replace("(", r"\(")) as exc:
        main(["--runs", str(run), "-o", str(out)])
    assert str(run) in str(exc.value)
    assert not out.exists()  # nothing written on bad input


def test_bad_command_lines(tmp_path):
    run = _write_run(tmp_path / "r", [_train(1, 3.0)])
    with pytest.raises(BigsError, match="--names: 2 names for 1 runs"):
        main(["--runs", str(run), "--names", "a", "b", "-o", str(tmp_path / "o")])
    with pytest.raises(BigsError, match="--runs: no such run directory"):
        main(["--runs", str(tmp_path / "nope"), "-o", str(tmp_path / "o")])
    with pytest.raises(BigsError, match="duplicate run names"):
        main(["--runs", str(run), str(run), "-o", str(tmp_path / "o")])


def test_auto_smoothing_lags_a_fixed_share_of_the_curve():
    from bigs.plots import auto_smoothing

    assert auto_smoothing(40) == pytest.approx(0.5)
    assert auto_smoothing(400) == pytest.approx(10 / 11)
    assert auto_smoothing(100_000) == 0.99
    assert auto_smoothing(0) == 0.0
