"""The study as one command: merge.py --reproduce end to end on tiny data, probing only what is read, and the paired
bootstrap on a case whose answer is known."""
import json
import os

import numpy as np
import pytest
import torch

import merge
import probe
import tasks
import tiny_distill as td


def write_predictions(folder, tag: str, correct: dict, sizes: dict = None) -> None:
    """Fake stored predictions: task -> (seeds, items) bool array of right answers (label 0, wrong answers 1)."""
    stored = {}
    for task, right in correct.items():
        labels = torch.zeros(right.shape[1], dtype=torch.int16)
        seeds = {s: dict(test_pred=torch.tensor(~r, dtype=torch.int16)) for s, r in enumerate(right)}
        n_clips = len(sizes[task]) if sizes else right.shape[1]
        stored[task] = dict(classes=[0, 1], seeds=seeds, test_labels=labels,
                            test_sizes=torch.tensor(sizes[task] if sizes else np.ones(n_clips), dtype=torch.int32))
    td.save_checkpoint(probe.predictions_path(str(folder), tag, "last", "linear"), **stored)


def test_paired_bootstrap_finds_a_known_difference(tmp_path):
    """A is right wherever B is, and on 10% more items: the difference is 0.1 on every task, its interval holds 0.1
    and is as wide as the analytic paired standard error says; identical models give exactly 0."""
    rng = np.random.default_rng(0)
    n = 2000
    a, b, same = {}, {}, {}
    for t in tasks.PROBE_TASKS:
        u = rng.uniform(size=(1, n))
        a[t], b[t] = u < 0.6, u < 0.5
    write_predictions(tmp_path, "A", a)
    write_predictions(tmp_path, "B", b)
    cfg = merge.Config(predictions=str(tmp_path))
    d, lo, hi = merge.paired_difference(cfg, [("A", "B")])
    exact = np.mean([(a[t].mean() - b[t].mean()) for t in tasks.PROBE_TASKS])
    se = np.sqrt(np.mean([(a[t] ^ b[t]).mean() * (1 - (a[t] ^ b[t]).mean()) / n for t in tasks.PROBE_TASKS])
                 / len(tasks.PROBE_TASKS))  # sd of the mean over tasks of independent per-task differences
    assert d == pytest.approx(exact) and abs(exact - 0.1) < 0.02 and lo < exact < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert merge.paired_difference(cfg, [("A", "A")]) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_resamples_whole_clips_of_frames(tmp_path):
    """A frame-level task's frames move together: clips that are all right or all wrong widen the interval over
    what the same frames resampled one by one would give."""
    n_clips, frames = 200, 10
    right = np.repeat(np.random.default_rng(1).uniform(size=n_clips) < 0.5, frames)[None]  # (1, clips * frames)
    sizes = {t: [frames] * n_clips for t in tasks.PROBE_TASKS}
    write_predictions(tmp_path, "A", {t: right for t in tasks.PROBE_TASKS}, sizes)
    write_predictions(tmp_path, "B", {t: np.zeros_like(right) for t in tasks.PROBE_TASKS}, sizes)
    d, lo, hi = merge.paired_difference(merge.Config(predictions=str(tmp_path)), [("A", "B")])
    per_frame_width = 2 * 1.96 * np.sqrt(right.mean() * (1 - right.mean()) / right.size / len(tasks.PROBE_TASKS))
    assert d == pytest.approx(right.mean()) and hi - lo > 2 * per_frame_width


def test_reproduce_runs_the_study_end_to_end_and_a_second_call_redoes_nothing(tiny_setup, tmp_path, monkeypatch,
                                                                               capsys):
    """merge.py --reproduce on tiny data: every distillation, the probes (test only where reported), the tables
    with the paired intervals; a second call skips every stage; a separate probe.py gives the same rows."""
    cfg, _ = tiny_setup
    monkeypatch.chdir(tmp_path)
    args = ["--reproduce", "--seeds", "0", "--steps", "2", "--cache_crops", "16", "--probe_seeds", "1",
            "--probe_steps", "10", "--teacher_speech", cfg.teacher_speech, "--teacher_music", cfg.teacher_music,
            "--init", cfg.init, "--data_dir", cfg.data_dir]
    merge.main(args)
    out = capsys.readouterr().out
    assert os.path.exists("out/study.md") and "TA valid pick" in out and "minus 2x ensemble" in out
    for name, path in merge.student_paths(merge.Config(), 0).items():
        assert os.path.exists(path), name
    rows = probe.read_results("out/results.jsonl")
    unread = {r["model"] for r in rows if r["test"] is None}
    read = {r["model"] for r in rows if r["test"] is not None}
    interior = {f"ta_{a:.1f}_{1 - a:.1f}_own_s0" for a in (0.3, 0.4, 0.6, 0.7)}  # on the line, not reported
    assert "ta_0.9_0.1_own_s0" in read and unread <= interior and len(unread) >= 3
    assert not {"ta_1.0_0.0_own_s0", "ta_0.0_1.0_own_s0"} & (read | unread)  # the students themselves, probed once
    times = json.load(open("out/reproduce_times.json"))
    assert "distil ensemble_2x seed 0" in times and len(times) > 20
    merge.main(args)
    second = capsys.readouterr().out
    assert "ETA" not in second.split("tables and plots")[0] and second.count("done before, skipped") >= 20
    assert len(probe.read_results("out/results.jsonl")) == len(rows)
    probe.main(["--model", "out/music_music_s0/student.pt", "--tag", "again", "--seeds", "1", "--steps", "10",
                "--data_dir", cfg.data_dir, "--results", "out/again.jsonl", "--predictions", "out/again"])
    again = {r["task"]: (r["valid"], r["test"]) for r in probe.read_results("out/again.jsonl")}
    mine = {r["task"]: (r["valid"], r["test"]) for r in rows if r["model"] == "student_music_own_s0"}
    assert again == mine
