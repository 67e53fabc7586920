"""probe.py: linear and MLP probes, selection on valid, CSV tasks and their errors, results and the overall score."""
import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

import probe
import tasks


def blobs(n_per_class: int, classes: int, dims: int, seed: int, shuffle_labels: bool = False) -> dict:
    """Linearly separable Gaussian clusters as (N, L=3, C) features; optionally with labels shuffled."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dims, generator=g) * 3
    data = {"classes": list(range(classes))}
    for s in probe.SPLITS:
        y = torch.arange(classes).repeat_interleave(n_per_class)
        X = centres[y][:, None].repeat(1, 3, 1) + torch.randn(len(y), 3, dims, generator=g)
        data[s] = (X, y[torch.randperm(len(y), generator=g)] if shuffle_labels else y, torch.ones(len(y)))
    return data


def xor(n: int, seed: int) -> dict:
    """Four Gaussian blobs at (+-2, +-2) labelled by the sign of x * y: no linear probe can do better than chance."""
    g = torch.Generator().manual_seed(seed)
    data = {"classes": [0, 1]}
    for s in probe.SPLITS:
        corner = torch.randint(0, 2, (n, 2), generator=g) * 4.0 - 2.0
        X = torch.cat([corner + 0.5 * torch.randn(n, 2, generator=g), torch.randn(n, 6, generator=g)], 1)[:, None]
        data[s] = (X, ((corner[:, 0] > 0) ^ (corner[:, 1] > 0)).long(), torch.ones(n))
    return data


def fit_and_test(data: dict, layer: str, seed: int, kind: str = "linear", **cfg) -> dict:
    """One probe chosen on valid, then its test accuracy (read once)."""
    chosen = probe.fit_probes(data, layer, [seed], kind, probe.Config(**cfg))[0]
    pred = probe.test_predictions(data["test"][0], layer, chosen)
    return dict(chosen, test=float((pred == data["test"][1]).float().mean()))


def test_probe_separates_separable_features():
    """>= 0.95 test accuracy on well-separated clusters, for last and weighted layers."""
    data = blobs(40, 6, 16, seed=0)
    for layer in ("last", "weighted", "0"):
        assert fit_and_test(data, layer, seed=0)["test"] >= 0.95


def test_probe_stays_near_chance_on_shuffled_labels():
    """With labels unrelated to the features the test accuracy stays near 1/6."""
    data = blobs(40, 6, 16, seed=1, shuffle_labels=True)
    assert fit_and_test(data, "last", seed=0)["test"] < 1 / 6 + 0.12


def test_selection_uses_valid_and_never_test():
    """Changing test labels cannot change which probe is chosen or its valid score."""
    data = blobs(30, 4, 8, seed=2)
    a = fit_and_test(data, "last", 0)
    data["test"] = (data["test"][0], torch.zeros_like(data["test"][1]), data["test"][2])
    b = fit_and_test(data, "last", 0)
    assert (a["valid"], a["l2"], a["step"]) == (b["valid"], b["l2"], b["step"]) and a["test"] != b["test"]


def test_seeds_fitted_side_by_side_equal_seeds_fitted_alone():
    """Batching the probe seeds is an implementation detail: each seed's choice and valid accuracy are its own."""
    data = blobs(30, 5, 12, seed=3)
    together = probe.fit_probes(data, "weighted", [0, 1, 2], "linear", probe.Config(steps=100))
    for seed, a in enumerate(together):
        b = probe.fit_probes(data, "weighted", [seed], "linear", probe.Config(steps=100))[0]
        assert (a["l2"], a["step"]) == (b["l2"], b["step"]) and a["valid"] == pytest.approx(b["valid"], abs=1e-6)
        assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(a["params"], b["params"]))


def test_mlp_probe_separates_xor_which_the_linear_probe_cannot():
    """MARBLE's MLP (512 ReLU units) learns a non-linear boundary; the linear probe stays near chance."""
    data = xor(300, seed=0)
    assert fit_and_test(data, "last", 0, "mlp")["test"] > 0.9
    assert fit_and_test(data, "last", 0, "linear")["test"] < 0.65


def test_mlp_probe_stays_near_chance_on_shuffled_labels():
    data = blobs(40, 6, 16, seed=4, shuffle_labels=True)
    assert fit_and_test(data, "last", 0, "mlp")["test"] < 1 / 6 + 0.12


def test_logmel_frames_follow_the_encoder_frame_formula():
    """The baseline has one frame per encoder frame: floor((n - 400) / 320) + 1."""
    for n in (400, 719, 720, 16000, 48123):
        assert probe.LogMel()(torch.zeros(2, n))[0].shape == (2, tasks.n_frames(n), 80)


def test_overall_score_is_zero_at_logmel_and_1000_at_the_reference():
    """SUPERB's normalisation: base -> 0, reference -> 1000, linear in between."""
    base, ref = {"a": 0.5, "b": 0.2}, {"a": 0.9, "b": 0.6}
    assert probe.overall_score(base, base, ref) == 0
    assert probe.overall_score(ref, base, ref) == pytest.approx(1000)
    assert probe.overall_score({"a": 0.7, "b": 0.4}, base, ref) == pytest.approx(500)


def write_csv(folder, lines):
    (folder / "task.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return "csv:" + str(folder / "task.csv")


def test_external_csv_task_runs_end_to_end(tmp_path):
    """Any sample rate, channel count and file name: loud vs quiet-high tones are told apart, results appended."""
    rng = np.random.default_rng(0)
    lines = ["path,label,split"]
    for i in range(36):
        label, sr = ("low", "high")[i % 2], (8000, 44100, 22050)[i % 3]
        t = np.arange(int(sr * rng.uniform(0.3, 1.2))) / sr
        f0 = (200 if label == "low" else 2000) * rng.uniform(0.9, 1.1)
        wav = np.stack([np.sin(2 * np.pi * f0 * t)] * (1 + i % 2), 1) + 0.01 * rng.standard_normal((len(t), 1))
        name = f"clip {i}, é.{('wav', 'flac')[i % 2]}"
        sf.write(tmp_path / name, wav.astype(np.float32), sr)
        lines.append(f'"{name}",{label},{("train", "train", "valid", "test")[i % 4]}')
    spec = write_csv(tmp_path, lines)
    out = tmp_path / "r.jsonl"
    probe.main(["--model", "logmel", "--task", spec, "--results", str(out), "--seeds", "2", "--steps", "100"])
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2 and {"model", "task", "layer", "seed", "metric", "valid", "test"} <= set(rows[0])
    assert rows[0]["task"] == "task" and all(r["test"] >= 0.9 for r in rows)


@pytest.mark.parametrize("bad, message", [
    (["path,label", "a.wav,x"], "lacks column"),
    (["path,label,split", "a.wav,x,training"], r"task.csv:2: split must be"),
    (["path,label,split", "missing.wav,x,train"], r"task.csv:2: audio file not found"),
    (["path,label,split", "a.wav,x,train", "a.wav,y,train", "a.wav,x,valid"], "no rows in split 'test'"),
    (["path,label,split", "a.wav,x,train", "a.wav,x,valid", "a.wav,x,test"], "at least 2"),
    (["path,label,split", "a.wav,,train"], r"task.csv:2: empty label"),
])
def test_bad_csv_gets_a_one_line_error_naming_the_row(tmp_path, bad, message):
    """Every CSV mistake is a ValueError with the file, the row and what to fix."""
    sf.write(tmp_path / "a.wav", np.zeros(800, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match=message) as e:
        probe.load_task(write_csv(tmp_path, bad), str(tmp_path))
    assert "\n" not in str(e.value)


def test_unreadable_audio_in_a_csv_names_the_row(tmp_path):
    """A file that is not audio fails at extraction with the CSV row in the message."""
    sf.write(tmp_path / "a.wav", np.random.default_rng(0).standard_normal(800).astype(np.float32), 16000)
    (tmp_path / "b.wav").write_bytes(b"garbage")
    spec = write_csv(tmp_path, ["path,label,split", "a.wav,x,train", "b.wav,y,train", "a.wav,x,valid", "a.wav,x,test"])
    with pytest.raises(ValueError, match=r"task.csv:3: cannot read audio"):
        probe.run(probe.Config(model="logmel", task=spec, results=str(tmp_path / "r.jsonl")))
    with pytest.raises(SystemExit, match=r"^error: .*task.csv:3: cannot read audio"):  # the command line: one line
        probe.main(["--model", "logmel", "--task", spec, "--results", str(tmp_path / "r.jsonl")])


def test_generated_tasks_probe_above_chance(tiny_data, tmp_path):
    """On the tiny corpus, logmel beats chance on keyword spotting and pitch, and PR runs frame-level."""
    out = tmp_path / "r.jsonl"
    probe.main(["--model", "logmel", "--task", "KS,PR,Pitch", "--data_dir", tiny_data.data_dir,
                "--results", str(out), "--seeds", "1", "--steps", "150"])
    got = {r["task"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert got["KS"]["test"] > 2 / 12 and got["Pitch"]["test"] > 3 / 48 and got["PR"]["test"] > 0.3
    assert got["PR"]["n_test"] > 1000  # frames, not clips


def test_overall_score_reads_the_teachers_weighted_rows_for_a_last_layer_model():
    """A student probed on its last layer is scored against the teachers' weighted-layer rows (their protocol)."""
    rows = [dict(model=m, task="KS", layer=layer, seed=0, valid=0, test=acc, probe="linear")
            for m, layer, acc in (("student", "last", 0.7), ("logmel", "last", 0.5),
                                  ("teacher_speech", "weighted", 0.9))]
    lines = probe.score_lines(rows, "student", "last", probe.Config())
    assert lines[0] == "speech score: 500.0 over 1 tasks" and not any("s_ref = 1.0" in x for x in lines)
