"""Bad input: every kind is one line and a non-zero exit, never a traceback; a killed run resumes to the same
student; an interrupted data generation is never taken for complete."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

import merge
import probe
import tasks
import tiny_distill as td
from conftest import run
from test_trust import refusal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sine_csv(folder, lines, name="t.csv"):
    sf.write(folder / "a.wav", np.sin(np.arange(4000) / 5).astype(np.float32), 16000)
    (folder / name).write_text("\n".join(lines) + "\n")
    return f"csv:{folder / name}"


def bad_inputs(cfg, tmp_path) -> list:
    """(what, call) for the bad inputs of all four scripts."""
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    theta0 = torch.load(cfg.init, weights_only=True)
    student = str(tmp_path / "student.pt")  # tau = 0, enough to reach the write
    td.save_checkpoint(student, encoder=theta0["encoder"], theta0_fingerprint=theta0["fingerprint"])
    (tmp_path / "afile").write_text("x")
    ok_csv = sine_csv(tmp_path, ["path,label,split", "a.wav,x,train", "a.wav,y,train", "a.wav,x,valid", "a.wav,x,test"])
    data = ["--data_dir", cfg.data_dir]
    return [
        ("probe: missing model", lambda: probe.main(["--model", str(tmp_path / "none.pt"), "--task", "KS", *data])),
        ("probe: corrupt model", lambda: probe.main(["--model", str(tmp_path / "corrupt.pt"), "--task", "KS", *data])),
        ("probe: unknown task", lambda: probe.main(["--task", "Jazz", *data])),
        ("probe: layer out of range", lambda: probe.main(["--model", cfg.init, "--layer", "7", "--task", "KS", *data])),
        ("probe: layer not a number", lambda: probe.main(["--layer", "top", "--task", "KS", *data])),
        ("probe: no csv", lambda: probe.main(["--task", f"csv:{tmp_path / 'none.csv'}"])),
        ("probe: csv without split", lambda: probe.main(["--task",
                                                         sine_csv(tmp_path, ["path,label", "a.wav,x"], "bad.csv")])),
        ("probe: zero seeds", lambda: probe.main(["--seeds", "0", "--task", ok_csv])),
        ("probe: unwritable results", lambda: probe.main(["--task", ok_csv,
                                                          "--results", str(tmp_path / "afile" / "r.jsonl"),
                                                          "--steps", "5"])),
        ("distill: unknown domain", lambda: td.main(["--domain", "jazz", *data])),
        ("distill: batch 0", lambda: td.main(["--batch", "0", *data])),
        ("distill: steps not a number", lambda: td.main(["--steps", "many"])),
        ("distill: crop under one frame", lambda: td.main(["--crop_s", "0.01", *data])),
        ("distill: corrupt teacher", lambda: td.main(["--domain", "speech",
                                                      "--teacher_speech", str(tmp_path / "corrupt.pt"),
                                                      "--init", str(tmp_path / "t0.pt"), *data])),
        ("distill: teacher path typo", lambda: td.main(["--domain", "speech",
                                                        "--teacher_speech", str(tmp_path / "tpyo.pt"),
                                                        "--init", str(tmp_path / "t0.pt"), *data])),
        ("distill: resume without checkpoint", lambda: td.main(["--resume", "--out_dir", str(tmp_path / "norun"), *data,
                                                                *[f"--{k}={getattr(cfg, k)}" for k in ("teacher_speech",
                                                                  "teacher_music", "init", "dim", "conv_channels")]])),
        ("tasks: negative pool", lambda: tasks.main(["--pool_minutes", "-1", "--data_dir", str(tmp_path / "d")])),
        ("tasks: zero workers", lambda: tasks.main(["--workers", "0", "--data_dir", str(tmp_path / "d")])),
        ("tasks: unwritable data dir", lambda: tasks.main(["--data_dir", str(tmp_path / "afile" / "d"),
                                                           "--pool_minutes", "0.1"])),
        ("merge: lambda not a number", lambda: merge.main(["--lam_speech", "half", "--out", str(tmp_path / "m.pt")])),
        ("merge: unknown method", lambda: merge.main(["--method", "avg", "--out", str(tmp_path / "m.pt")])),
        ("merge: missing students", lambda: merge.main(["--init", cfg.init, "--out", str(tmp_path / "m.pt"),
                                                        "--seeds", "7"])),
        ("merge: unmakeable out folder", lambda: merge.main(["--init", cfg.init,
                                                             "--speech", student, "--music", student,
                                                             "--out", str(tmp_path / "afile" / "sub" / "m.pt")])),
        ("merge: nothing to do", lambda: merge.main([])),
    ]


def test_every_bad_input_is_one_line_and_a_nonzero_exit(tiny_setup, tmp_path, capsys):
    """No traceback anywhere: 24 kinds of bad input across the four scripts."""
    cfg, _ = tiny_setup
    seen = {}
    for what, call in bad_inputs(cfg, tmp_path):
        seen[what] = refusal(call)
    assert "Traceback" not in capsys.readouterr().err
    assert ("--batch must be >= 1" in seen["distill: batch 0"]
            and "--pool_minutes must be >= " in seen["tasks: negative pool"])
    assert "tpyo.pt" in seen["distill: teacher path typo"] and not os.path.exists(tmp_path / "tpyo.pt")
    assert "afile" in seen["merge: unmakeable out folder"] and "afile" in seen["probe: unwritable results"]
    assert "python tiny_distill.py --domain speech" in seen["merge: missing students"]
    assert "speech_speech_s7" in seen["merge: missing students"]


def test_a_script_run_as_a_process_prints_one_line_not_a_traceback(tmp_path):
    """The same refusal from the command line: exit status 1, one line on stderr."""
    for args in (["probe.py", "--model", str(tmp_path / "x.pt"), "--task", "csv:" + str(tmp_path / "t.csv")],
                 ["tiny_distill.py", "--batch", "x"]):
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("error: "), proc.stderr


def test_merge_out_without_students_uses_the_documented_defaults(tiny_setup, tmp_path, monkeypatch):
    """merge.py --out PATH finds out/speech_<data>_s<seed>/student.pt and out/music_... by itself."""
    cfg, _ = tiny_setup
    monkeypatch.chdir(tmp_path)
    run(cfg, tmp_path / "out" / "speech_speech_s0", domain="speech", steps=2)
    run(cfg, tmp_path / "out" / "music_music_s0", domain="music", steps=2)
    merge.main(["--init", cfg.init, "--out", "merged.pt"])
    assert "encoder" in torch.load(tmp_path / "merged.pt", weights_only=True)


def test_a_killed_run_resumes_to_the_same_student(tiny_setup, tmp_path):
    """SIGKILL mid-run, then --resume: at most ckpt_every steps are lost, the log holds every step once, and the
    student equals an uninterrupted run's bit for bit."""
    cfg, _ = tiny_setup
    steps, every = 300, 5
    args = [f"--{k}={v}" for k, v in vars(cfg).items() if not isinstance(v, bool) and k not in ("steps", "ckpt_every")]
    args += [f"--steps={steps}", f"--ckpt_every={every}", "--domain=speech", "--threads=1",
             f"--out_dir={tmp_path / 'killed'}"]
    log = tmp_path / "killed" / "log.jsonl"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tiny_distill.py"), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 12):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged = [json.loads(line)["step"] for line in log.read_text().splitlines() if line.strip()]
    kept = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["step"]
    assert proc.returncode == -signal.SIGKILL and max(logged) < steps, "the run finished before the kill"
    assert kept % every == 0 and 0 <= max(logged) - kept <= every
    resumed = run(cfg, tmp_path / "killed", domain="speech", steps=steps, ckpt_every=every, resume=True)
    straight = run(cfg, tmp_path / "straight", domain="speech", steps=steps, ckpt_every=every)
    a = torch.load(straight["student"], weights_only=True)["encoder"]
    b = torch.load(resumed["student"], weights_only=True)["encoder"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == list(range(1, steps + 1))


def test_interrupted_data_generation_is_never_taken_for_complete(tmp_path, monkeypatch):
    """A crash while remaking data/ leaves no manifest, so the next run remakes everything."""
    small = dict(pool_minutes=0.14, speakers=5, ks_reps=1, singers=5, sing_reps=1, presets=3, notes_per_preset=2,
                 songs_per_style=5, test_scale=1, workers=1)
    (tmp_path / "manifest.json").write_text(json.dumps({"config": {"made by": "another config"}}))
    real, calls = tasks.make_clip, []

    def crash_on_tenth_clip(*a):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return real(*a)
    monkeypatch.setattr(tasks, "make_clip", crash_on_tenth_clip)
    with pytest.raises(KeyboardInterrupt):
        tasks.generate(tasks.Config(data_dir=str(tmp_path), **small))
    assert not os.path.exists(tmp_path / "manifest.json")
