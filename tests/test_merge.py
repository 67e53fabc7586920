"""merge.py: task vectors, the merge, TIES and DARE, and the refusals."""
import pytest
import torch

import merge
import tiny_distill as td


def states(seed: int = 0):
    """theta0 and two 'students' of a tiny encoder (random perturbations), plus an integer buffer."""
    torch.manual_seed(seed)
    enc = td.Encoder(td.EncoderConfig(conv_channels=8, dim=32, layers=2, heads=2, ffn=64, pos_kernel=8, pos_groups=2))
    theta0 = {k: v.clone() for k, v in enc.state_dict().items()}
    theta0["counter"] = torch.tensor(7)
    speech = {k: v + 0.1 * torch.randn_like(v) if v.is_floating_point() else v.clone() for k, v in theta0.items()}
    music = {k: v + 0.1 * torch.randn_like(v) if v.is_floating_point() else v.clone() for k, v in theta0.items()}
    return theta0, speech, music


def test_tau_of_theta0_is_zero_and_integer_buffers_stay_out():
    """tau(theta0) = 0 everywhere; integer tensors are not in the task vector."""
    theta0, _, _ = states()
    tau = merge.task_vector(theta0, theta0)
    assert "counter" not in tau and all(torch.count_nonzero(v) == 0 for v in tau.values())


@pytest.mark.parametrize("lams, expect", [((0, 0), "theta0"), ((1, 0), "speech"), ((0, 1), "music")])
def test_corner_lambdas_give_back_theta0_and_the_students(lams, expect):
    """(0,0) -> theta0, (1,0) -> speech student, (0,1) -> music student."""
    theta0, speech, music = states()
    merged = merge.merge(theta0, [merge.task_vector(speech, theta0), merge.task_vector(music, theta0)], list(lams))
    target = dict(theta0=theta0, speech=speech, music=music)[expect]
    assert all(torch.allclose(merged[k].float(), target[k].float(), atol=1e-6) for k in theta0)


def test_merge_is_linear_in_lambda():
    """theta(lam) - theta0 = lam_s tau_s + lam_m tau_m at a random point, entry by entry."""
    theta0, speech, music = states()
    taus = [merge.task_vector(speech, theta0), merge.task_vector(music, theta0)]
    a, b = 0.37, 1.15
    merged = merge.merge(theta0, taus, [a, b])
    for k in taus[0]:
        assert torch.allclose(merged[k] - theta0[k], a * taus[0][k] + b * taus[1][k], atol=1e-6)


def test_prediction_heads_never_enter_a_task_vector():
    """A student state with head keys does not match the backbone: refused, not silently dropped."""
    theta0, speech, _ = states()
    with pytest.raises(ValueError, match="unexpected"):
        merge.task_vector({**speech, "heads.proj.weight": torch.zeros(3)}, theta0)


def test_missing_key_or_other_shape_is_refused():
    """No partial merge: a missing key or a shape change stops with the key named."""
    theta0, speech, _ = states()
    key = next(iter(theta0))
    with pytest.raises(ValueError, match="missing"):
        merge.task_vector({k: v for k, v in speech.items() if k != key}, theta0)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        merge.task_vector({**speech, key: torch.zeros(3)}, theta0)


def test_mismatched_theta0_fingerprint_is_refused(tmp_path):
    """Students distilled from another theta0 cannot be merged."""
    theta0, speech, music = states()
    td.save_checkpoint(str(tmp_path / "theta0.pt"), encoder=theta0, encoder_config={}, fingerprint="aaa")
    td.save_checkpoint(str(tmp_path / "s.pt"), encoder=speech, theta0_fingerprint="aaa")
    td.save_checkpoint(str(tmp_path / "m.pt"), encoder=music, theta0_fingerprint="bbb")
    cfg = merge.Config(init=str(tmp_path / "theta0.pt"))
    with pytest.raises(ValueError, match="same theta0"):
        merge.merged_state(cfg, str(tmp_path / "s.pt"), str(tmp_path / "m.pt"))


def test_ties_steps_keep_the_top_fraction_elect_the_sign_and_drop_disagreement():
    """trim keeps exactly the top-k magnitudes; the elected sign is the sign of the sum; disagreeing entries drop."""
    x = torch.tensor([0.1, -5.0, 0.3, 2.0, -0.2, 0.0, 4.0, -1.0, 0.05, 0.6])
    assert torch.equal(merge.trim(x, 0.3), torch.tensor([0, -5.0, 0, 2.0, 0, 0, 4.0, 0, 0, 0]))
    flats = torch.tensor([[1.0, -2.0, 3.0, 0.0], [-0.5, -1.0, -4.0, 0.0]])
    gamma = merge.elect_sign(flats)
    assert torch.equal(gamma, torch.tensor([1.0, -1.0, -1.0, 0.0]))
    assert torch.equal(merge.disjoint_sum(flats, gamma), torch.tensor([1.0, -3.0, -4.0, 0.0]))


def test_ties_with_one_task_is_the_trimmed_student():
    """lam = (1, 0): theta0 + trim(tau_speech)."""
    theta0, speech, music = states()
    taus = [merge.task_vector(speech, theta0), merge.task_vector(music, theta0)]
    merged = merge.ties_merge(theta0, taus, [1.0, 0.0], keep_frac=0.2)
    changed = sum(int(torch.count_nonzero(merged[k] - theta0[k])) for k in taus[0])
    assert abs(changed - 0.2 * merge.flatten(taus[0]).numel()) <= 2


def test_dare_drops_the_fraction_and_keeps_the_expectation():
    """About p of the entries are zeroed; the mean over many draws is tau."""
    tau = {"w": torch.full((200, 50), 0.5)}
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([merge.dare(tau, 0.9, g)["w"] for _ in range(400)])
    assert abs((draws[0] == 0).float().mean().item() - 0.9) < 0.02
    assert abs(draws.mean().item() - 0.5) < 0.01


def fake_rows(valid_best: float, test_best: float) -> list:
    """Hand-written results: logmel at 0.5, teachers at 0.9, merges peaking on valid at one lam, on test at another."""
    import tasks
    rows = []
    for task in tasks.PROBE_TASKS:
        for model, v, t in (("logmel", 0.5, 0.5), ("teacher_speech", 0.9, 0.9), ("teacher_music", 0.9, 0.9)):
            rows.append(dict(model=model, task=task, layer="last", seed=0, valid=v, test=t, n_test=100))
        for lam_speech, lam_music in merge.sweep_points("line"):
            for seed in (0, 1):
                tag = merge.merged_tag(merge.Config(), lam_speech, lam_music, seed)
                rows.append(dict(model=tag, task=task, layer="last", seed=0,
                                 valid=0.7 + 0.1 * (lam_speech == valid_best),
                                 test=0.7 + 0.1 * (lam_speech == test_best), n_test=100))
    return rows


def test_valid_selection_picks_the_valid_argmax_even_when_test_disagrees():
    """The reported lambda is the best on valid; test's own best is ignored."""
    pick, score = merge.valid_pick(fake_rows(valid_best=0.3, test_best=0.9), merge.Config(), [0, 1])
    assert pick == (0.3, 0.7) and score == pytest.approx(0.8)


def test_table_printer_on_a_small_results_file():
    """The headline table has a row per model with n seeds, the averages and the overall score."""
    table = merge.headline_table(fake_rows(valid_best=0.3, test_best=0.9), merge.Config(seeds="0,1"))
    lines = {line.split(" |")[0].strip("| "): line for line in table.splitlines()}
    assert "logmel (n=1)" in lines and lines["logmel (n=1)"].rstrip(" |").endswith("0.0")
    assert lines["TA lam 0.9/0.1 (n=2)"].rstrip(" |").endswith("750.0 ± 0.0")
    assert lines["TA valid pick 0.3/0.7 (n=2)"].rstrip(" |").endswith("500.0 ± 0.0")
    assert lines["speech teacher (weighted) (n=1)"].rstrip(" |").endswith("1000.0")
    import tasks
    n = len(tasks.PROBE_TASKS)
    se = f"{(n * 0.25 / 100) ** 0.5 / n:.4f}"  # the binomial SE at p = 0.5; merges at 0.7-0.8 are below
    assert f"{se} (logmel), at most {se}" in table


def test_a_fresh_sweep_probes_logmel_first(tiny_data, tmp_path):
    """probe_model takes 'logmel' (no file) like a checkpoint path and skips models whose probes are stored."""
    results = str(tmp_path / "results.jsonl")
    cfg = merge.Config(results=results, predictions=str(tmp_path / "pred"), probe_seeds=1, probe_steps=20,
                       data_dir=tiny_data.data_dir)
    merge.probe_model("logmel", "logmel", "last", cfg)  # used to fail: "logmel not found"
    import probe
    rows = probe.read_results(results)
    assert {r["model"] for r in rows} == {"logmel"} and merge.probed(cfg, "logmel", "last", "train,valid,test")
    merge.probe_model("logmel", "logmel", "last", cfg)  # already done: nothing appended
    assert len(probe.read_results(results)) == len(rows)
    with pytest.raises(ValueError, match="not found"):
        merge.probe_model(str(tmp_path / "missing.pt"), "x", "last", cfg)


def test_teachers_of_one_size_are_probed_against_one_random_encoder(tiny_setup):
    """Random encoders of equal sizes are one encoder (seed 0): the study probes it once, and both teacher-table
    columns read it; teachers of two sizes get one each."""
    cfg, _ = tiny_setup
    two = merge.Config(teacher_speech=cfg.teacher_speech, teacher_music=cfg.teacher_music, init=cfg.init)
    one = merge.Config(teacher_speech=cfg.teacher_speech, teacher_music=cfg.teacher_speech, init=cfg.init)
    assert merge.random_tags(two) == {"speech": "random_teacher_speech", "music": "random_teacher_music"}
    assert merge.random_tags(one) == {"speech": "random_teacher_speech", "music": "random_teacher_speech"}
    tags = lambda c: [tag for _, tag, _ in merge.references(c)]  # noqa: E731
    assert len(tags(two)) == 6 and len(tags(one)) == 5 and "random_teacher_music" not in tags(one)
    assert td.fingerprint(td.random_like(cfg.teacher_speech).state_dict()) != \
        td.fingerprint(td.random_like(cfg.teacher_music).state_dict())  # two sizes, two encoders
