"""tasks.py: the synthetic corpora, their labels and splits, and the audio reader every script shares."""
import csv
import os

import numpy as np
import pytest
import soundfile as sf

import tasks


def test_same_seed_gives_identical_clips_and_another_seed_does_not(tmp_path):
    """Each clip is a pure function of (seed, set, index), whatever order or process makes it."""
    def make(seed, folder):
        cfg = tasks.Config(data_dir=str(folder), seed=seed)
        for d in ("probe", "pool_speech", "pool_music"):
            os.makedirs(folder / (d + ".partial"), exist_ok=True)
        picks = [j for j in tasks.jobs(cfg) if j[1] == 3 and j[0] in ("cmd", "note", "sing", "song", "env")]
        for job in reversed(picks):
            tasks.make_clip(cfg, job)
        return {f: sf.read(folder / "probe.partial" / f)[0] for f in sorted(os.listdir(folder / "probe.partial"))}
    a, b, c = make(0, tmp_path / "a"), make(0, tmp_path / "b"), make(1, tmp_path / "c")
    assert len(a) == 5 and all(np.array_equal(a[f], b[f]) for f in a)
    assert not any(len(a[f]) == len(c[f]) and np.allclose(a[f], c[f]) for f in a)


def test_phone_labels_line_up_with_voiced_and_silent_frames():
    """Frames labelled as vowels are loud and periodic; silence is quiet; s/sh/f frames are aperiodic."""
    rng = np.random.default_rng(0)
    energy, periodic = {}, {}
    for i in range(4):
        spk = tasks.make_speaker(rng)
        wav, labels = tasks.speak(rng, spk, "neutral", ["fish", "see", "open", "the", "door", "shut"], clean=True)
        assert len(labels) == tasks.n_frames(len(wav))
        lag = int(round(tasks.SR / spk["f0"]))
        for i_f, lab in enumerate(labels):
            x = wav[i_f * tasks.HOP: i_f * tasks.HOP + tasks.WIN]
            kind = "sil" if lab == "sil" else tasks.PHONES[lab][0] if lab not in ("s", "sh", "f") else "unvoiced"
            energy.setdefault(kind, []).append(np.mean(x ** 2))
            # best normalised autocorrelation near the speaker's period (f0 moves with intonation)
            r = max(np.dot(x[:-k], x[k:]) / (np.linalg.norm(x[:-k]) * np.linalg.norm(x[k:]) + 1e-12)
                    for k in range(int(lag * 0.7), int(lag * 1.4)))
            periodic.setdefault(kind, []).append(r)
    assert np.mean(energy["vowel"]) > 100 * np.mean(energy["sil"])
    assert np.median(periodic["vowel"]) > 0.8
    assert np.median(periodic["unvoiced"]) < 0.5


def test_every_class_is_in_every_split_and_splits_follow_the_protocol(tiny_data):
    """All classes in train, valid and test; unseen speakers for KS/IC/ER/PR, seen ones for SID."""
    speaker_of = {}
    for task in tasks.PROBE_TASKS:
        with open(os.path.join(tiny_data.data_dir, "probe", f"{task}.csv")) as f:
            rows = list(csv.DictReader(f))
        labels = (lambda r: r["frames"].split()) if task == "PR" else (lambda r: [r["label"]])
        per_split = {s: {lab for r in rows if r["split"] == s for lab in labels(r)} for s in ("train", "valid", "test")}
        assert per_split["train"] == per_split["valid"] == per_split["test"], task
        assert len(per_split["train"]) >= {"PR": 20, "Pitch": 48}.get(task, 4), task
        if task == "SID":
            speaker_of = {r["path"]: r["label"] for r in rows}
    with open(os.path.join(tiny_data.data_dir, "probe", "IC.csv")) as f:
        ic = list(csv.DictReader(f))
    train_spk = {speaker_of[r["path"]] for r in ic if r["split"] == "train"}
    assert not train_spk & {speaker_of.get(r["path"]) for r in ic if r["split"] == "test"}  # extra speakers: not in SID


def test_test_scale_adds_test_only_clips_and_keeps_every_base_clip(tiny_data):
    """The extras are appended: each base clip keeps its index (so its audio); train and valid do not change;
    every test set is test_scale times its base share (= test_scale x valid at the tiny size)."""
    base = tasks.jobs(tasks.Config(**{**tiny_data.__dict__, "test_scale": 1}))
    scaled = {(k, i): spec for k, i, spec in tasks.jobs(tiny_data)}
    assert len(scaled) > len(base) and all(scaled[(k, i)] == spec for k, i, spec in base)
    for task in tasks.PROBE_TASKS:
        with open(os.path.join(tiny_data.data_dir, "probe", f"{task}.csv")) as f:
            splits = [r["split"] for r in csv.DictReader(f)]
        assert splits.count("test") == tiny_data.test_scale * splits.count("valid"), task


def test_probe_sets_never_overlap_the_pools(tiny_data):
    """Pools and probe clips are different files made from different rng streams."""
    pool = {f for d in ("pool_speech", "pool_music") for f in os.listdir(os.path.join(tiny_data.data_dir, d))}
    probe = set(os.listdir(os.path.join(tiny_data.data_dir, "probe")))
    assert len(pool) >= 4 and not pool & probe
    manifest = tasks.generate(tiny_data)  # a second call finds the manifest and makes nothing
    assert manifest["minutes"]["pool_speech"] >= tiny_data.pool_minutes


def test_wav_round_trip_keeps_the_waveform(tmp_path):
    """write_wav (16-bit) then read_audio gives the normalised signal back to 16-bit precision."""
    wav = np.random.default_rng(0).standard_normal(tasks.SR).astype(np.float32)
    tasks.write_wav(str(tmp_path / "x.wav"), wav)
    back = tasks.read_audio(str(tmp_path / "x.wav"))
    assert np.abs(back - tasks.normalize(wav)).max() < 2e-3 * np.abs(tasks.normalize(wav)).max()


@pytest.mark.parametrize("sr_in", [8000, 22050, 44100, 48000])
def test_resampling_matches_an_analytic_sine(sr_in):
    """A 440 Hz sine at sr_in comes out as the same sine at 16 kHz (ends excluded)."""
    seconds = 1.0
    t_in = np.arange(int(seconds * sr_in)) / sr_in
    out = tasks.resample(np.sin(2 * np.pi * 440 * t_in), sr_in, tasks.SR)
    t_out = np.arange(len(out)) / tasks.SR
    assert len(out) == tasks.SR
    middle = slice(1000, -1000)
    assert np.abs(out[middle] - np.sin(2 * np.pi * 440 * t_out[middle])).max() < 0.02


def test_foreign_audio_is_read_by_the_documented_rule(tmp_path):
    """Stereo 44.1 kHz float -> mono 16 kHz; long -> centre crop; tiny -> one frame; empty -> clear error."""
    stereo = np.random.default_rng(0).standard_normal((44100 * 3, 2)).astype(np.float32)
    sf.write(tmp_path / "s t,é.wav", stereo, 44100, subtype="FLOAT")
    assert tasks.read_audio(str(tmp_path / "s t,é.wav")).shape == (3 * tasks.SR,)
    assert tasks.read_audio(str(tmp_path / "s t,é.wav"), max_seconds=1.0).shape == (tasks.SR,)
    sf.write(tmp_path / "short.flac", np.ones(100, dtype=np.float32) * 0.1, 22050)
    assert tasks.read_audio(str(tmp_path / "short.flac")).shape == (tasks.WIN,)
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="empty"):
        tasks.read_audio(str(tmp_path / "empty.wav"))
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match="cannot read audio"):
        tasks.read_audio(str(tmp_path / "junk.wav"))


def test_sound_classes_are_tested_on_variants_never_heard_in_training(tiny_data):
    """ESC: every class in every split, and no (class, variant) of valid or test rendered for train."""
    with open(os.path.join(tiny_data.data_dir, "probe", "ESC.csv")) as f:
        rows = list(csv.DictReader(f))
    jobs = {f"env_{i:05d}.wav": spec for kind, i, spec in tasks.jobs(tiny_data) if kind == "env"}
    variants = {s: {jobs[r["path"]][:2] for r in rows if r["split"] == s} for s in ("train", "valid", "test")}
    assert {r["label"] for r in rows if r["split"] == "test"} == set(tasks.ENV_CLASSES)
    assert not variants["train"] & (variants["valid"] | variants["test"]) and not variants["valid"] & variants["test"]
