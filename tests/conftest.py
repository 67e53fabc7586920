"""Shared fixtures: a tiny corpus made once per test session (a few seconds), and torch kept to one thread."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_num_threads(1)  # two pytest workers or a busy core would otherwise slow each other down badly

import tasks  # noqa: E402

TINY = dict(pool_minutes=0.27, pool_clip_s=8.0, speakers=10, ks_reps=1, ic_reps=1, singers=5, sing_reps=1, presets=3,
            notes_per_preset=24, songs_per_style=5, test_scale=2, workers=2)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A complete data/ folder at a tiny size: 6/2/2 speakers, 3/1/1 singers and presets, 3/1/1 songs per style,
    and test sets twice their base share (test_scale 2): test = 2 x valid for every task at this size."""
    cfg = tasks.Config(data_dir=str(tmp_path_factory.mktemp("data")), **TINY)
    tasks.generate(cfg)
    return cfg
