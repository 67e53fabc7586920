"""tiny_distill.py: teachers, theta0, distillation runs, checkpoints, resume, the cache, DDP, --bench."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

import tasks
import tiny_distill as td
from conftest import run

def test_student_starts_from_the_speech_teachers_lower_layers(tiny_setup):
    """theta0 = the speech teacher's conv, projection, positional conv and layers 1-2, with a fingerprint."""
    cfg, _ = tiny_setup
    teacher = td.load_encoder(cfg.teacher_speech)
    theta0 = torch.load(cfg.init, weights_only=True)
    assert theta0["encoder_config"]["layers"] == 2
    for k, v in theta0["encoder"].items():
        assert torch.equal(v, teacher.state_dict()[k]), k
    assert theta0["fingerprint"] == td.fingerprint(theta0["encoder"])
    wav = torch.randn(1, 8000)
    assert torch.allclose(td.load_encoder(cfg.init)(wav)[2], teacher(wav)[2], atol=1e-5)


@pytest.mark.parametrize("midi", [40, 57, 69, 83])
def test_music_unit_features_are_mfccs_next_to_the_right_pitch_class(midi):
    """--music_units mfcc_chroma clusters MFCCs (timbre) next to chroma (pitch class): for a harmonic tone the
    chroma bin of its note is the largest. Chroma bin j holds MIDI notes 28 + j + 12 k. The default: MFCCs alone."""
    t = torch.arange(16000) / tasks.SR
    f0 = 440 * 2 ** ((midi - 69) / 12)
    wav = sum(torch.sin(2 * math.pi * h * f0 * t) / h for h in range(1, 4))[None]  # (1, 16000), 3 harmonics
    feats = td.teacher_recipe(td.Config(music_units="mfcc_chroma"), "music").unit_features(wav)  # (1, T, 39 + 12)
    assert feats.shape[-1] == 51
    for domain in ("speech", "music"):
        assert torch.equal(td.teacher_recipe(td.Config(), domain).unit_features(wav), tasks.mfcc(wav))
    assert torch.equal(feats[..., :39], tasks.mfcc(wav))
    chroma = feats[0, 5:-5, 39:].mean(0)  # (12,), away from the edges
    assert chroma.argmax().item() == (midi - 28) % 12, chroma


def test_chroma_units_head_is_on_by_default_and_changes_the_speech_teacher(tiny_setup, tmp_path):
    """The default chroma head (weight > 0, on a lower layer) rebuilds the session's tiny speech teacher to the bit;
    weight 0 (HuBERT's single target) and another layer each train other weights."""
    cfg, _ = tiny_setup
    assert td.Config().chroma_units_weight > 0 and 0 < td.Config().chroma_units_layer < td.Config().teacher_layers
    prints = {}
    for w, layer in ((cfg.chroma_units_weight, cfg.chroma_units_layer), (0.0, 0), (2.0, 1)):
        path = str(tmp_path / f"speech_{w}_{layer}.pt")
        td.pretrain_teacher(td.Config(**{**vars(cfg), "chroma_units_weight": w, "chroma_units_layer": layer}),
                            "speech", path)
        prints[w, layer] = td.load_checkpoint(path, "")["fingerprint"]
    assert prints[cfg.chroma_units_weight, cfg.chroma_units_layer] == \
        td.load_checkpoint(cfg.teacher_speech, "")["fingerprint"], prints
    assert len(set(prints.values())) == 3, prints


def test_music_teacher_options_change_it_and_the_defaults_rebuild_it(tiny_setup, tmp_path):
    """The default music recipe rebuilds the session's tiny music teacher to the bit; chroma units, the CQT
    regression and a stage 0 on mixed audio each train other weights."""
    cfg, _ = tiny_setup
    prints = {}
    for name, change in [("default", {}), ("units", {"music_units": "mfcc_chroma"}), ("cqt", {"recon_weight": 1.0}),
                         ("mix", {"front_end_data_music": "mix"})]:
        path = str(tmp_path / f"music_{name}.pt")
        td.pretrain_teacher(td.Config(**{**vars(cfg), **change}), "music", path)
        prints[name] = td.load_checkpoint(path, "")["fingerprint"]
    assert prints.pop("default") == td.load_checkpoint(cfg.teacher_music, "")["fingerprint"], prints
    assert len(set(prints.values())) == 3, prints


@pytest.mark.parametrize("domain", ["speech", "music"])
def test_front_end_fit_learns_the_spectrum(tiny_setup, domain):
    """Teacher stage 0: the conv front end's read-out explains more of the domain's spectrum (mel for speech,
    mel + semitone for music) after fitting."""
    cfg, _ = tiny_setup
    pools, ev = {domain: td.load_pool(cfg, domain)}, {}
    fit_cfg = td.Config(**{**vars(cfg), "batch": 4, "log_every": 1000})
    for steps in (1, 300):
        torch.manual_seed(0)
        enc = td.Encoder(td.EncoderConfig(conv_channels=32, dim=32, layers=1, heads=2, ffn=64, pos_kernel=8,
                                          pos_groups=2))
        ev[steps] = td.fit_front_end(enc, pools, domain, td.teacher_recipe(fit_cfg, domain), fit_cfg,
                                     torch.Generator().manual_seed(0), steps, "cpu")
    assert ev[300] > ev[1] + 0.1, ev


def test_resume_continues_bit_for_bit(tiny_setup, tmp_path, monkeypatch):
    """4 steps straight equal a run that crashes after step 2 (checkpoint kept) + --resume, bit for bit."""
    cfg, _ = tiny_setup
    straight = run(cfg, tmp_path / "a", domain="speech")
    real, calls = td.read_crops, []

    def crash_on_third_batch(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(td, "read_crops", crash_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "b", domain="speech")
    monkeypatch.setattr(td, "read_crops", real)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 2
    resumed = run(cfg, tmp_path / "b", domain="speech", resume=True)
    a = torch.load(straight["student"], weights_only=True)["encoder"]
    b = torch.load(resumed["student"], weights_only=True)["encoder"]
    assert all(torch.equal(a[k], b[k]) for k in a) and straight["loss"] == resumed["loss"]


def test_checkpoint_round_trip_gives_identical_outputs(tiny_setup, tmp_path):
    """A saved student reloads into an encoder with the same outputs and records theta0's fingerprint."""
    cfg, _ = tiny_setup
    res = run(cfg, tmp_path, domain="music", steps=2)
    ck = torch.load(res["student"], weights_only=True)
    assert ck["theta0_fingerprint"] == torch.load(cfg.init, weights_only=True)["fingerprint"]
    enc = td.Encoder(td.EncoderConfig(**ck["encoder_config"]))
    enc.load_state_dict(ck["encoder"])
    wav = torch.randn(2, 6000)
    with torch.no_grad():
        assert all(torch.equal(x, y) for x, y in zip(enc.eval()(wav), td.load_encoder(res["student"])(wav)))


def test_ensemble_has_two_head_sets_and_uses_both_teachers(tiny_setup, tmp_path):
    """--domain both: one head set per teacher, per-head stats for both, on mixed audio."""
    cfg, _ = tiny_setup
    res = run(cfg, tmp_path, domain="both", steps=2)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert {k.split(".")[0] for k in ck["heads"]} == {"speech", "music"}
    assert set(res["heads"]) == {"speech", "music"} and ck["data"] == "mix"
    # the music teacher has its own, wider conv stack; the student keeps the speech teacher's (theta0)
    assert td.load_encoder(cfg.teacher_music).cfg.conv_channels == 24
    assert td.load_encoder(res["student"]).cfg.conv_channels == 16


def test_bad_input_gets_a_clear_error(tiny_setup, tmp_path):
    """Unknown domain, corrupt teacher, empty data folder: one-line errors that say what to do."""
    cfg, root = tiny_setup
    with pytest.raises(ValueError, match="--domain must be"):
        run(cfg, tmp_path, domain="jazz")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="unreadable"):
        td.load_encoder(str(tmp_path / "bad.pt"))
    empty = tmp_path / "empty"
    (empty / "pool_music").mkdir(parents=True)
    with pytest.raises(ValueError, match="no audio in"):
        td.load_pool(td.Config(data_dir=str(empty)), "music")


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_setup, tmp_path, monkeypatch):
    """A non-finite loss at step 3 stops with a clear error; checkpoint.pt still holds step 2."""
    cfg, _ = tiny_setup
    real, calls = td.distill_loss, []

    def nan_at_step_three(pred, target):
        calls.append(1)
        loss, l1, cos = real(pred, target)
        return (loss * float("nan") if len(calls) == 3 else loss), l1, cos
    monkeypatch.setattr(td, "distill_loss", nan_at_step_three)
    with pytest.raises(FloatingPointError, match="last good checkpoint"):
        run(cfg, tmp_path, domain="music")
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2


def test_cli_runs_three_steps_and_writes_the_run_folder(tiny_setup, tmp_path):
    """python tiny_distill.py --domain music --steps 3 ends with student.pt, log.jsonl and config.json."""
    cfg, _ = tiny_setup
    args = [f"--{k}={v}" for k, v in vars(cfg).items() if k not in ("out_dir", "steps") and not isinstance(v, bool)]
    td.main(args + ["--steps=3", f"--out_dir={tmp_path}"])
    assert {"student.pt", "log.jsonl", "config.json", "checkpoint.pt"} <= set(os.listdir(tmp_path))


def test_audio_folder_reads_a_librispeech_style_tree_lazily(tmp_path):
    """Nested FLAC at 16 kHz and stereo WAV at 44.1 kHz: lazy crops equal the in-memory ones, resampled to 16 kHz."""
    t16, t44 = np.arange(3 * tasks.SR) / tasks.SR, np.arange(3 * 44100) / 44100
    (tmp_path / "103" / "1240").mkdir(parents=True)
    sf.write(tmp_path / "103" / "1240" / "103-1240-0000.flac", 0.5 * np.sin(2 * np.pi * 440 * t16), tasks.SR)
    sine44 = 0.5 * np.sin(2 * np.pi * 440 * t44)
    sf.write(tmp_path / "song.WAV", np.stack([sine44, sine44], 1), 44100)
    lazy, memory = td.AudioFolder(str(tmp_path), in_memory_s=0), td.AudioFolder(str(tmp_path))
    assert lazy.wavs is None and memory.wavs is not None and lazy.lengths == memory.lengths == [3 * tasks.SR] * 2
    for i in range(2):
        crop = lazy.read(i, 8000, 16000)
        assert crop.shape == (16000,)
        expect = 0.5 * np.sin(2 * np.pi * 440 * (8000 + np.arange(16000)) / tasks.SR)
        assert np.abs(crop[400:-400] - expect[400:-400]).max() < 0.02  # away from the crop's edges
        assert np.allclose(tasks.normalize(crop), tasks.normalize(memory.read(i, 8000, 16000)), atol=0.05)
    g = torch.Generator().manual_seed(0)
    rows = td.draw_crops({"music": lazy}, "music", 3, 16000, g)
    assert rows.shape == (3, 3) and td.read_crops({"music": lazy}, rows, 16000).shape == (3, 16000)


def test_paper_preset_sets_the_distilhubert_recipe_and_flags_still_win():
    cfg = td.parse_args(["--preset", "paper", "--steps", "10"])
    assert (cfg.batch, cfg.lr, cfg.crop_s, cfg.steps, cfg.dim, cfg.teacher_layers) == (24, 2e-4, 15.6, 10, 768, 12)
    assert td.target_layers(cfg.teacher_layers) == [4, 8, 12]
    with pytest.raises(SystemExit):
        td.parse_args(["--preset", "huge"])


def losses_of(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f]


def test_cached_targets_match_the_online_run_within_float16(tiny_setup, tmp_path, monkeypatch):
    """--cache_targets: the float16 targets on disk give the losses that the teacher's float32 targets give on the
    same crops, and a cached run runs no teacher."""
    cfg, _ = tiny_setup
    kw = dict(domain="music", cache_targets=True, cache_crops=6, steps=3)
    cached = run(cfg, tmp_path / "cached", **kw)
    assert cached["teacher_clip_forwards"] == 0
    assert any(f.startswith("music_") for d in os.listdir(os.path.join(cfg.data_dir, "cache"))
               for f in os.listdir(os.path.join(cfg.data_dir, "cache", d)))
    teacher = td.load_encoder(cfg.teacher_music)
    layers = td.target_layers(teacher.cfg.layers)

    def online(bank, idx):  # the same crops, targets from the teacher now, in float32
        wav = td.read_crops(bank.pools, bank.rows[idx], bank.crop_n)
        with torch.no_grad():
            hidden = teacher(wav)
        return wav, {"music": torch.stack([hidden[i] for i in layers], 1)}
    monkeypatch.setattr(td.TargetBank, "batch", online)
    run(cfg, tmp_path / "online", **kw)
    a, b = losses_of(tmp_path / "cached"), losses_of(tmp_path / "online")
    assert len(a) == 3 and np.allclose(a, b, rtol=2e-3), (a, b)


def test_mix_bank_is_half_of_each_pool_bank_and_copies_their_targets(tiny_setup):
    """The ensemble's bank: the first halves of the speech and music banks' crops. Each teacher's targets for its own
    pool's half are that pool bank's, the other half is computed; all equal the teacher's own within float16."""
    cfg = td.Config(**{**vars(tiny_setup[0]), "domain": "both", "cache_targets": True, "cache_crops": 6})
    td.build_target_bank(cfg)
    pools = {k: td.load_pool(cfg, k) for k in td.KINDS}
    mix = td.TargetBank(cfg, "mix", pools, 6)
    pool_banks = {k: td.TargetBank(cfg, k, {k: pools[k]}, 6) for k in td.KINDS}
    assert np.array_equal(mix.rows, np.concatenate([pool_banks["speech"].rows[:3], pool_banks["music"].rows[:3]]))
    wav = td.read_crops(pools, mix.rows, mix.crop_n)
    for d, half in (("speech", slice(0, 3)), ("music", slice(3, 6))):
        teacher = td.load_encoder(cfg.teacher_speech if d == "speech" else cfg.teacher_music)
        layers = td.target_layers(teacher.cfg.layers)
        mix.add_teacher(d, teacher, layers, "cpu", 2)  # made by build_target_bank: read, not computed
        pool_banks[d].add_teacher(d, teacher, layers, "cpu", 2)
        assert np.array_equal(mix.targets[d][half], pool_banks[d].targets[d][:3])
        online = td.teacher_targets({d: teacher}, {d: layers}, wav)[d]
        assert torch.allclose(torch.from_numpy(np.array(mix.targets[d])).float(), online, atol=1e-2, rtol=1e-2)


def test_two_ranks_with_half_the_batch_each_make_the_same_update(tiny_setup, tmp_path):
    """torchrun, gloo, 2 CPU processes with batch 2 each == 1 process with batch 4 (one update: lr is 0 at step 2)."""
    cfg, _ = tiny_setup
    args = [f"--{k}={v}" for k, v in vars(cfg).items()
            if k not in ("out_dir", "steps", "batch") and not isinstance(v, bool)]
    args += ["--domain=music", "--steps=2", "--batch=4", "--threads=1"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           os.path.join(root, "tiny_distill.py"), *args, f"--out_dir={tmp_path / 'ddp'}"],
                          capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    single = run(cfg, tmp_path / "one", domain="music", steps=2, batch=4)
    a = torch.load(tmp_path / "ddp" / "student.pt", weights_only=True)["encoder"]
    b = torch.load(single["student"], weights_only=True)["encoder"]
    theta0 = torch.load(cfg.init, weights_only=True)["encoder"]
    assert not torch.equal(b["layers.1.fc1.weight"], theta0["layers.1.fc1.weight"])  # an update happened
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a)


def test_bench_prints_throughput_and_the_ratio_to_transformers(tiny_setup, capsys):
    cfg, _ = tiny_setup
    ratio = td.bench(cfg, reps=2)
    out = capsys.readouterr().out
    assert "audio-s/s" in out and "GFLOP/s" in out
    try:
        import transformers  # noqa: F401
    except ImportError:
        pytest.skip("transformers not installed: the reference comparison is skipped (tests/requirements.txt)")
    assert ratio > 0 and out.strip().splitlines()[-1].startswith("speed_ratio_vs_transformers")
