"""Shared fixtures: a tiny corpus made once per test session (a few seconds), and torch kept to one thread."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_num_threads(1)  # two pytest workers or a busy core would otherwise slow each other down badly

import tasks  # noqa: E402

TINY = dict(pool_minutes=0.27, pool_clip_s=8.0, speakers=10, ks_reps=1, ic_reps=1, singers=5, sing_reps=1, presets=3,
            notes_per_preset=24, songs_per_style=5, env_variants=3, env_reps=1, test_scale=2, workers=2)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A complete data/ folder at a tiny size: 6/2/2 speakers, 3/1/1 singers and presets, 3/1/1 songs per style,
    and test sets twice their base share (test_scale 2): test = 2 x valid for every task at this size."""
    cfg = tasks.Config(data_dir=str(tmp_path_factory.mktemp("data")), **TINY)
    tasks.generate(cfg)
    return cfg


DISTILL_TINY = dict(dim=32, conv_channels=16, music_conv_channels=24, teacher_layers=3, teacher_steps=3,
                    music_teacher_steps=3, front_end_steps_speech=2, front_end_steps_music=2, steps=4, batch=2,
                    crop_s=0.5, log_every=1, ckpt_every=2, bf16="off", chroma_units_layer=2)


@pytest.fixture(scope="session")
def tiny_setup(tiny_data, tmp_path_factory):
    """Tiny speech and music teachers pretrained for 3 steps, and theta0, in a temporary folder."""
    import tiny_distill as td
    root = tmp_path_factory.mktemp("distill")
    cfg = td.Config(data_dir=tiny_data.data_dir, teacher_speech=str(root / "speech.pt"),
                    teacher_music=str(root / "music.pt"), init=str(root / "theta0.pt"), **DISTILL_TINY)
    td.pretrain_teacher(cfg, "speech", cfg.teacher_speech)
    td.main(["--init_only"] + [f"--{k}={v}" for k, v in vars(cfg).items() if not isinstance(v, bool)])
    td.pretrain_teacher(cfg, "music", cfg.teacher_music)
    return cfg, root


def run(cfg, out, **kw):
    """One tiny distillation into `out`, cfg's fields overridden by kw."""
    import tiny_distill as td
    return td.train(td.Config(**{**vars(cfg), "out_dir": str(out), **kw}))
