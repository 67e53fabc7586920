"""Task vectors and their merge: theta0 + lam_speech * tau_speech + lam_music * tau_music, the paper's second half.

tau = theta - theta0 over the backbone (conv front end, projection, positional conv, layer norms, transformer layers;
the prediction heads live outside the backbone and never enter), after Ilharco et al. (ICLR 2023). Checkpoints
that do not share theta0's fingerprint, keys, shapes or dtypes are refused: there is no partial merge.

Beyond plain task arithmetic (ablations):
  --method ties   TIES-merging (Yadav et al. 2023): trim each tau to its top keep_frac magnitudes, elect a sign per
                  entry from the lam-weighted sum, keep only the agreeing entries (summed, lam-weighted)
  --method dare   DARE (Yu et al. 2024): drop a fraction drop_prob of each tau's entries, rescale the rest by 1/(1-p)

Usage:  python merge.py --lam_speech 0.9 --lam_music 0.1 --out out/merged.pt   # the seed-0 students by default
        python merge.py --sweep line --seeds 0,1,2      # the paper's protocol, probed, then the tables and plots
        python merge.py --table                          # the headline table from out/results.jsonl
"""
import contextlib
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Callable, NamedTuple

import numpy as np
import torch

import probe
import tasks
import tiny_distill as td


@dataclass
class Config:
    # one merge
    speech: str = ""  # speech student checkpoint (default: out/speech_<data>_s<first of --seeds>/student.pt)
    music: str = ""  # music student checkpoint (default: out/music_<data>_s<first of --seeds>/student.pt)
    init: str = "out/theta0.pt"  # theta0, the students' shared init
    teacher_speech: str = td.Config.teacher_speech  # the teachers: reference rows of every table, and --reproduce's
    teacher_music: str = td.Config.teacher_music  # (the same files tiny_distill.py uses by default)
    lam_speech: float = 0.9  # weight of tau_speech
    lam_music: float = 0.1  # weight of tau_music
    method: str = "ta"  # ta (task arithmetic) | ties | dare
    keep_frac: float = 0.2  # TIES: fraction of each tau's entries kept by magnitude
    drop_prob: float = 0.9  # DARE: fraction of each tau's entries dropped
    seed: int = 0  # DARE's random drops
    out: str = ""  # write the merged checkpoint here (one merge)
    # sweeps and tables
    sweep: str = ""  # line (lam_speech + lam_music = 1 in steps of 0.1) | paper (its 5 points) | grid (0..1.2 by 0.3)
    seeds: str = "0"  # comma-separated distillation seeds to sweep or tabulate
    data: str = ""  # distillation data of the students: '' (own pools) or speech (the authors' setting)
    table: bool = False  # print the headline table, the cost table and the plots from --results, and stop
    reproduce: bool = False  # make whatever of the study is missing (data, theta0, runs, probes), then the tables
    steps: int = 500  # --reproduce: distillation steps of the students and the ensemble (the 2x ensemble: twice)
    cache_crops: int = 4000  # --reproduce: distil from a cached bank of this many crops per data setting (0: online)
    probe_seeds: int = 3  # probe seeds per model
    probe_steps: int = 400  # optimisation steps of each probe
    workers: int = 2  # --reproduce: jobs side by side, one torch thread each (separate commands match with --threads 1)
    # files
    results: str = "out/results.jsonl"  # probe results, read and appended
    predictions: str = "out/predictions"  # chosen probes and per-item test predictions (the paired intervals)
    data_dir: str = "data"  # the probe sets (tasks.py)


# ----------------------------------------------------------------------------------------------------------------
# Task arithmetic

def check_compatible(theta: dict, theta0: dict, what: str) -> None:
    """Same keys, shapes and dtypes as theta0, else one line saying what differs."""
    missing, extra = sorted(set(theta0) - set(theta)), sorted(set(theta) - set(theta0))
    if missing or extra:
        raise ValueError(f"{what}: keys differ from theta0 (missing {missing[:4]}, unexpected {extra[:4]}); "
                         "distil it again from the same --init")
    for k in theta0:
        if theta[k].shape != theta0[k].shape or theta[k].dtype != theta0[k].dtype:
            raise ValueError(f"{what}: {k} is {tuple(theta[k].shape)} {theta[k].dtype}, theta0 has "
                             f"{tuple(theta0[k].shape)} {theta0[k].dtype}; distil it again from the same --init")


def task_vector(theta: dict, theta0: dict) -> dict:
    """tau = theta - theta0 over the backbone's floating-point tensors."""
    check_compatible(theta, theta0, "student")
    return {k: theta[k] - theta0[k] for k in theta0 if theta0[k].is_floating_point()}


def merge(theta0: dict, taus: list, lams: list) -> dict:
    """theta0 + sum_t lam_t * tau_t; tensors outside the task vectors (integer buffers) are theta0's."""
    assert len(taus) == len(lams), (len(taus), len(lams))
    return {k: theta0[k] + sum(lam * tau[k] for tau, lam in zip(taus, lams)) if k in taus[0] else theta0[k].clone()
            for k in theta0}


# ---- TIES, its three steps over the flattened vector

def flatten(tau: dict) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in tau.values()])


def unflatten(flat: torch.Tensor, like: dict) -> dict:
    return {k: x.view_as(v) for (k, v), x in zip(like.items(), flat.split([v.numel() for v in like.values()]))}


def trim(flat: torch.Tensor, keep_frac: float) -> torch.Tensor:
    """Keep the keep_frac largest-magnitude entries, zero the rest."""
    k = max(1, int(round(keep_frac * flat.numel())))
    threshold = flat.abs().kthvalue(flat.numel() - k + 1).values
    return torch.where(flat.abs() >= threshold, flat, torch.zeros_like(flat))


def elect_sign(flats: torch.Tensor) -> torch.Tensor:
    """gamma = sign of the sum over tasks. flats (n_tasks, N) -> (N,)."""
    return torch.sign(flats.sum(0))


def disjoint_sum(flats: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Sum over the tasks whose entry agrees with the elected sign; zero where none does. (n_tasks, N) -> (N,)."""
    agree = (torch.sign(flats) == gamma) & (flats != 0)
    return (flats * agree).sum(0)


def ties_merge(theta0: dict, taus: list, lams: list, keep_frac: float) -> dict:
    """theta0 + disjoint_sum(lam_t * trim(tau_t)). With one non-zero lam this is theta0 + lam * trim(tau)."""
    flats = torch.stack([lam * trim(flatten(tau), keep_frac) for tau, lam in zip(taus, lams)])
    return merge(theta0, [unflatten(disjoint_sum(flats, elect_sign(flats)), taus[0])], [1.0])


def dare(tau: dict, drop_prob: float, g: torch.Generator) -> dict:
    """Drop each entry with probability p and rescale the survivors by 1 / (1 - p): E[dare(tau)] = tau."""
    if not 0 <= drop_prob < 1:
        raise ValueError(f"--drop_prob must be in [0, 1), got {drop_prob}")
    return {k: v * (torch.rand(v.shape, generator=g) >= drop_prob) / (1 - drop_prob) for k, v in tau.items()}


def merged_state(cfg: Config, speech_path: str, music_path: str) -> tuple:
    """Load theta0 and the two students, check the fingerprints, merge with cfg's method -> (state, theta0 ckpt)."""
    theta0 = td.load_checkpoint(cfg.init, "make it with python tiny_distill.py --init_only")
    taus = []
    for path, domain in ((speech_path, "speech"), (music_path, "music")):
        ck = td.load_checkpoint(path, f"distil it with python tiny_distill.py --domain {domain} (--out_dir, --seed and "
                                      f"--data as the path says), or pass --{domain}")
        if ck.get("theta0_fingerprint") != theta0["fingerprint"]:
            raise ValueError(f"{path} was distilled from theta0 {ck.get('theta0_fingerprint')}, but {cfg.init} is "
                             f"{theta0['fingerprint']}; merge only students of the same theta0")
        taus.append(task_vector(ck["encoder"], theta0["encoder"]))
    lams = [cfg.lam_speech, cfg.lam_music]
    if cfg.method == "ties":
        state = ties_merge(theta0["encoder"], taus, lams, cfg.keep_frac)
    elif cfg.method == "dare":
        g = torch.Generator().manual_seed(cfg.seed)
        state = merge(theta0["encoder"], [dare(t, cfg.drop_prob, g) for t in taus], lams)
    else:
        state = merge(theta0["encoder"], taus, lams)
    return state, theta0


def write_merged(cfg: Config, speech_path: str, music_path: str, out: str) -> None:
    state, theta0 = merged_state(cfg, speech_path, music_path)
    td.save_checkpoint(out, encoder=state, encoder_config=theta0["encoder_config"],
                       theta0_fingerprint=theta0["fingerprint"],
                       merge=dict(asdict(cfg), speech=speech_path, music=music_path))


# ----------------------------------------------------------------------------------------------------------------
# The sweep: every lambda point merged and probed; reference rows probed once

REPORTED = [0.9, 0.8, 0.5, 0.2, 0.1]  # lam_speech values the paper reports (lam_music = 1 - lam_speech)


def sweep_points(kind: str) -> list:
    """line: lam_speech + lam_music = 1 in steps of 0.1 (the paper's protocol); paper: the 5 points the paper
    reports; grid: both lambdas in 0, 0.3, ..., 1.2 (25 merges, a little beyond 1, where task arithmetic often
    peaks)."""
    if kind == "line":
        return [(round(float(a), 1), round(float(1 - a), 1)) for a in np.arange(0, 1.01, 0.1)]
    if kind == "paper":
        return [(a, round(1 - a, 1)) for a in REPORTED]
    if kind == "grid":
        axis = np.arange(0, 1.21, 0.3)
        return [(round(float(a), 1), round(float(b), 1)) for a in axis for b in axis]
    raise ValueError(f"--sweep must be line, paper or grid, got {kind!r}")


def student_paths(cfg: Config, seed: int) -> dict:
    """The students of one distillation seed (tiny_distill.py's default run folders): speech, music, ensemble and
    ensemble at twice the steps."""
    run_dir = lambda domain, data: os.path.join("out", f"{domain}_{cfg.data or data}_s{seed}")  # noqa: E731
    return dict(student_speech=cfg.speech or os.path.join(run_dir("speech", "speech"), "student.pt"),
                student_music=cfg.music or os.path.join(run_dir("music", "music"), "student.pt"),
                ensemble=os.path.join(run_dir("both", "mix"), "student.pt"),
                ensemble_2x=os.path.join(run_dir("both2x", "mix"), "student.pt"))


def tag_of(name: str, cfg: Config, seed: int) -> str:
    """Results tag: name, data setting and seed, e.g. student_speech_own_s0 or ta_0.9_0.1_own_s1."""
    return f"{name}_{cfg.data or 'own'}_s{seed}"


def merged_tag(cfg: Config, lam_speech: float, lam_music: float, seed: int) -> str:
    """Results tag of a merge. Task arithmetic's corners are models probed already: theta0 + 1.0 tau_speech is the
    speech student (likewise music), theta0 + 0 is theta0; their rows are reused, so nothing is probed twice."""
    if cfg.method == "ta" and (lam_speech, lam_music) in ((1.0, 0.0), (0.0, 1.0), (0.0, 0.0)):
        return {(1.0, 0.0): tag_of("student_speech", cfg, seed), (0.0, 1.0): tag_of("student_music", cfg, seed),
                (0.0, 0.0): "theta0"}[(lam_speech, lam_music)]
    method = "" if cfg.method == "ta" else cfg.method + "_"
    return tag_of(f"{method}ta_{lam_speech:.1f}_{lam_music:.1f}", cfg, seed)


def probed(cfg: Config, tag: str, layer: str, splits: str) -> bool:
    """Whether `tag`'s stored probes cover every task and probe seed, with test read if `splits` asks for it."""
    stored = probe.read_predictions(cfg.predictions, tag, layer)
    return all(t in stored and len(stored[t]["seeds"]) == cfg.probe_seeds and
               ("test" not in splits or all("test_pred" in p for p in stored[t]["seeds"].values()))
               for t in tasks.PROBE_TASKS)


AUDIO = {}  # path -> decoded clip, shared by every probe of this process (decoding 10k files takes seconds)


def probe_model(path: str, tag: str, layer: str, cfg: Config, splits: str = "train,valid,test") -> None:
    """probe.py on every task unless its stored probes already hold what `splits` asks (a killed probe redoes its
    model). splits train,valid chooses the probes and leaves test unread; test then reads it for the chosen ones."""
    if probed(cfg, tag, layer, splits):
        return
    if path != "logmel" and not os.path.exists(path.split(":", 1)[-1]):
        raise ValueError(f"{path} not found; run the distillations first (python merge.py --reproduce makes them)")
    print(f"probing {tag} ({path}, layer {layer}, {splits})", flush=True)
    probe.run(probe.Config(model=path, tag=tag, layer=layer, splits=splits, seeds=cfg.probe_seeds,
                           steps=cfg.probe_steps, results=cfg.results, data_dir=cfg.data_dir,
                           predictions=cfg.predictions), AUDIO)


def references(cfg: Config) -> list:
    """(model, tag, layer) of the rows every table compares against: log-mel, the teachers (SUPERB's weighted
    layers), random encoders of each teacher's size (one, when the sizes are one), theta0."""
    randoms = random_tags(cfg)
    return [("logmel", "logmel", "last"), (cfg.teacher_speech, "teacher_speech", "weighted"),
            (cfg.teacher_music, "teacher_music", "weighted")] + \
        [("random:" + getattr(cfg, f"teacher_{d}"), tag, "weighted") for d, tag in randoms.items()
         if d == "speech" or tag != randoms["speech"]] + [(cfg.init, "theta0", "last")]


def random_tags(cfg: Config) -> dict:
    """domain -> the results tag of the random encoder of its teacher's size. Teachers of one size (ours are) have
    one random encoder (same sizes, seed 0): it is probed once, as random_teacher_speech."""
    paths = (cfg.teacher_speech, cfg.teacher_music)
    same = all(os.path.exists(p) for p in paths) and td.read_encoder(paths[0])[0] == td.read_encoder(paths[1])[0]
    return {d: "random_teacher_speech" if same else f"random_teacher_{d}" for d in ("speech", "music")}


def merged_path(tag: str) -> str:
    return os.path.join("out", "merged", tag + ".pt")


def probe_merge(cfg: Config, lam_speech: float, lam_music: float, seed: int, splits: str) -> None:
    """Merge one seed's students at (lam_speech, lam_music) unless done, then probe the merge."""
    tag, paths = merged_tag(cfg, lam_speech, lam_music, seed), student_paths(cfg, seed)
    if not os.path.exists(merged_path(tag)):
        write_merged(Config(**{**asdict(cfg), "lam_speech": lam_speech, "lam_music": lam_music}),
                     paths["student_speech"], paths["student_music"], merged_path(tag))
    probe_model(merged_path(tag), tag, "last", cfg, splits)


def pick_tag(cfg: Config, seed: int) -> str:
    """The valid pick's tag for this seed: decided from every seed's valid accuracies, so after their probes."""
    pick = valid_pick(probe.read_results(cfg.results), cfg, [int(s) for s in cfg.seeds.split(",")])[0]
    return merged_tag(cfg, *pick, seed) if pick else ""


def sweep_jobs(cfg: Config) -> list:
    """The probes of a sweep as Jobs, in order: the references and theta0, every seed's students and ensembles, the
    merges at every sweep point. On the line, only what the table reports reads test: the paper's five points at
    once, the valid pick (chosen from all seeds' valid accuracies) last."""
    jobs, seeds = [], [int(s) for s in cfg.seeds.split(",")]
    for path, tag, layer in references(cfg):
        jobs.append(Job(f"probe {tag}", 60.0 if "teacher" in tag else 30.0, partial(probe_model, path, tag, layer, cfg),
                        partial(probed, cfg, tag, layer, "train,valid,test"), ("data", "theta0")))
    for seed in seeds:
        for name, path in student_paths(cfg, seed).items():
            tag = tag_of(name, cfg, seed)
            jobs.append(Job(f"probe {tag}", 30.0, partial(probe_model, path, tag, "last", cfg),
                            partial(probed, cfg, tag, "last", "train,valid,test"), (f"distil {name} seed {seed}",)))
        for lam_speech, lam_music in sweep_points(cfg.sweep):
            tag = merged_tag(cfg, lam_speech, lam_music, seed)
            if f"probe {tag}" in {j.name for j in jobs}:
                continue  # a corner: that student's (or theta0's) probe is a job already
            splits = "train,valid,test" if cfg.sweep != "line" or lam_speech in REPORTED else "train,valid"
            jobs.append(Job(f"probe {tag}", 30.0 if "test" in splits else 15.0,
                            partial(probe_merge, cfg, lam_speech, lam_music, seed, splits),
                            partial(probed, cfg, tag, "last", splits),
                            tuple(f"distil {n} seed {seed}" for n in ("student_speech", "student_music"))))
    line = [j.name for j in jobs]  # every probe above: the line's points and the students at its ends among them
    if cfg.sweep == "line":
        for seed in seeds:
            jobs.append(Job(f"probe the valid pick, seed {seed}", 20.0, partial(probe_pick, cfg, seed),
                            partial(pick_probed, cfg, seed), tuple(line)))
    return jobs


def probe_pick(cfg: Config, seed: int) -> None:
    probe_model(merged_path(pick_tag(cfg, seed)), pick_tag(cfg, seed), "last", cfg, "test")


def pick_probed(cfg: Config, seed: int) -> bool:
    tag = pick_tag(cfg, seed)
    return bool(tag) and probed(cfg, tag, "last", "test")


# ----------------------------------------------------------------------------------------------------------------
# Tables and plots from out/results.jsonl

def summary(rows: list, tag: str, split: str = "test") -> dict:
    """One model's per-task accuracies, speech and music averages and the overall score (x1000) against logmel
    and the domain teachers, all on `split`. Empty if the model or a reference has no rows."""
    mine = probe.mean_scores(rows, tag, split=split)
    base = probe.mean_scores(rows, "logmel", split=split)
    teachers = {d: probe.mean_scores(rows, f"teacher_{d}", split=split) for d in ("speech", "music")}
    ref = {}  # each task's reference: its own domain's teacher; the better of the two for general audio (ESC)
    for t, (domain, _) in tasks.PROBE_TASKS.items():
        known = [teachers[d][t] for d in (("speech", "music") if domain == "audio" else (domain,)) if t in teachers[d]]
        if known:
            ref[t] = max(known)
    names = [t for t in tasks.PROBE_TASKS if t in mine and t in base and t in ref]
    if len(names) < len(tasks.PROBE_TASKS):
        return {}
    out = {t: mine[t] for t in names}
    for domain in ("speech", "music"):
        out[f"{domain} avg"] = float(np.mean([mine[t] for t in names if tasks.PROBE_TASKS[t][0] == domain]))
    out["mean acc"] = float(np.mean([mine[t] for t in names]))
    # the SUPERB normalisation needs a reference above the baseline: tasks where the teacher is not above logmel
    # would flip sign or explode, so the score covers only the others (README says which)
    scored = [t for t in names if ref[t] > base[t] + 0.005]
    out["score"] = probe.overall_score({t: mine[t] for t in scored}, base, ref) if scored else float("nan")
    return out


def valid_pick(rows: list, cfg: Config, seeds: list, points: str = "line") -> tuple:
    """The swept lambda with the best mean accuracy over all tasks on VALID (mean over seeds); test is not
    looked at. (Mean accuracy, not the normalised score, which is undefined where a teacher is below logmel.)"""
    best, best_score = None, -np.inf
    for lam_speech, lam_music in sweep_points(points):
        scores = [summary(rows, merged_tag(cfg, lam_speech, lam_music, s), "valid").get("mean acc") for s in seeds]
        if all(x is not None for x in scores) and np.mean(scores) > best_score:
            best, best_score = (lam_speech, lam_music), float(np.mean(scores))
    return best, best_score


def table_rows(rows: list, cfg: Config, seeds: list) -> list:
    """(label, [tags, one per seed]) for the headline table."""
    entries = [("speech teacher (weighted)", ["teacher_speech"]), ("music teacher (weighted)", ["teacher_music"]),
               ("logmel", ["logmel"]), ("theta0", ["theta0"])]
    for name, label in (("student_speech", "speech student"), ("student_music", "music student"),
                        ("ensemble", "ensemble (both teachers)"), ("ensemble_2x", "ensemble, 2x steps")):
        entries.append((label, [tag_of(name, cfg, s) for s in seeds]))
    for method in [cfg.method] + [m for m in ("ties", "dare") if m != cfg.method]:  # then the ablations (--sweep paper)
        other = Config(**{**asdict(cfg), "method": method})
        for lam_speech, lam_music in sweep_points("paper"):
            entries.append((f"{method.upper()} lam {lam_speech}/{lam_music}",
                            [merged_tag(other, lam_speech, lam_music, s) for s in seeds]))
        pick, _ = valid_pick(rows, other, seeds, "line" if method == cfg.method else "paper")
        if pick:
            entries.append((f"{method.upper()} valid pick {pick[0]}/{pick[1]}",
                            [merged_tag(other, *pick, s) for s in seeds]))
    return entries


def test_se(rows: list, tag: str) -> float:
    """Standard error of a model's mean test accuracy over the tasks from the finite test sets alone (binomial,
    sqrt(sum_t p_t (1 - p_t) / n_t) / n_tasks): the noise floor no number of seeds removes."""
    p = probe.mean_scores(rows, tag)
    n = {r["task"]: r["n_test"] for r in rows
         if r["model"] == tag and r.get("n_test") and r.get("probe", "linear") == "linear"}
    return float(np.sqrt(sum(p[t] * (1 - p[t]) / n[t] for t in p)) / len(p)) if p else float("nan")


def headline_table(rows: list, cfg: Config) -> str:
    """Markdown: every task, speech and music averages, overall score; mean ± std over distillation seeds."""
    seeds = [int(s) for s in cfg.seeds.split(",")]
    cols = list(tasks.PROBE_TASKS) + ["speech avg", "music avg", "mean acc", "score"]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    ses = []
    for label, tags in table_rows(rows, cfg, seeds):
        found = [(t, x) for t, x in ((t, summary(rows, t)) for t in tags) if x]
        if not found:
            continue
        ses += [test_se(rows, t) for t, _ in found]
        cells = []
        for c in cols:
            v = np.array([x[c] for _, x in found])
            fmt = "{:.1f}" if c == "score" else "{:.3f}"
            cells.append(fmt.format(v.mean()) + (f" ± {fmt.format(v.std())}" if len(v) > 1 else ""))
        lines.append(f"| {label} (n={len(found)}) | " + " | ".join(cells) + " |")
    lines.append(f"\nStandard error of one model's mean test accuracy from the test-set sizes alone: "
                 f"{test_se(rows, 'logmel'):.4f} (logmel), at most {max(ses, default=float('nan')):.4f} over the rows "
                 f"above; the seed std comes on top of it. Paired differences:")
    return "\n".join(lines + interval_lines(rows, cfg))


def clip_correct(stored: dict, task: str) -> tuple:
    """One model's test predictions of a task -> (correct items per clip, averaged over probe seeds; items per
    clip). A frame-level task's clip holds all its frames, so resampling clips keeps them together."""
    entry = stored[task]
    correct = torch.stack([p["test_pred"] == entry["test_labels"] for p in entry["seeds"].values()]).float().mean(0)
    sizes = entry["test_sizes"].long()
    per_clip = torch.zeros(len(sizes)).index_add_(0, torch.repeat_interleave(torch.arange(len(sizes)), sizes), correct)
    return per_clip.double().numpy(), sizes.double().numpy()


def paired_difference(cfg: Config, pairs: list, n_boot: int = 2000, seed: int = 0) -> tuple:
    """Mean test accuracy (the mean over tasks) of A minus B, with a 95% interval from a paired bootstrap over test
    clips and distillation seeds. pairs: [(tag of A, tag of B)], one per seed. Each replicate resamples every
    task's clips (the same clips for A and B, and for every seed: paired) and then the seeds.
    -> (difference, low, high), or None when a model lacks stored test predictions."""
    rng = np.random.default_rng(seed)
    stored = [[probe.read_predictions(cfg.predictions, tag, "last") for tag in pair] for pair in pairs]
    if not all(all(t in s and "test_labels" in s[t] for t in tasks.PROBE_TASKS) for pair in stored for s in pair):
        return None
    diffs = np.zeros((n_boot, len(pairs)))  # (replicate, seed)
    point = np.zeros(len(pairs))
    for t in tasks.PROBE_TASKS:
        per = [[clip_correct(s, t) for s in pair] for pair in stored]  # [seed][model] -> (correct, sizes)
        sizes = per[0][0][1]
        counts = rng.multinomial(len(sizes), np.full(len(sizes), 1 / len(sizes)), size=n_boot)  # (replicate, clip)
        for i, ((a, _), (b, _)) in enumerate(per):
            point[i] += ((a - b).sum() / sizes.sum()) / len(tasks.PROBE_TASKS)
            diffs[:, i] += (counts @ (a - b)) / (counts @ sizes) / len(tasks.PROBE_TASKS)
    seeds_drawn = rng.integers(0, len(pairs), size=(n_boot, len(pairs)))
    boot = np.take_along_axis(diffs, seeds_drawn, 1).mean(1)
    return float(point.mean()), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def interval_lines(rows: list, cfg: Config) -> list:
    """The headline's two comparisons as paired differences with 95% intervals."""
    seeds = [int(s) for s in cfg.seeds.split(",")]
    pick, _ = valid_pick(rows, cfg, seeds)
    lines = []
    for name, label in (("ensemble", "ensemble"), ("ensemble_2x", "2x ensemble")):
        res = pick and paired_difference(cfg, [(merged_tag(cfg, *pick, s), tag_of(name, cfg, s)) for s in seeds])
        if res:
            d, lo, hi = res
            verdict = "excludes 0" if lo > 0 or hi < 0 else "includes 0"
            lines.append(f"- {cfg.method.upper()} valid pick {pick[0]}/{pick[1]} minus {label}: {d:+.4f} mean "
                         f"test accuracy, 95% interval [{lo:+.4f}, {hi:+.4f}] ({verdict}; paired bootstrap over "
                         f"test clips and {len(seeds)} seed(s), 2000 replicates)")
    return lines


def paired_se(cfg: Config, tag_a: str, tag_b: str, layer_a: str, layer_b: str, task: str) -> float:
    """Standard error of the test-accuracy difference of two models on one task, from their per-clip agreement."""
    (a, sizes), (b, _) = (clip_correct(probe.read_predictions(cfg.predictions, tag, layer), task)
                          for tag, layer in ((tag_a, layer_a), (tag_b, layer_b)))
    d = (a - b) / sizes.mean()  # each clip's share of the accuracy difference, in items of an average clip
    return float(d.std() / np.sqrt(len(d)))


def teacher_table(rows: list, cfg: Config) -> str:
    """Each teacher against log-mel and the random encoder of its own size, with theta0 and the students of the
    first seed; bold: the teacher beats both baselines of its domain's task by more than one paired SE."""
    seed = int(cfg.seeds.split(",")[0])
    randoms = random_tags(cfg)
    cols = [("log-mel", "logmel", "last"), ("random, speech size", randoms["speech"], "weighted"),
            ("random, music size", randoms["music"], "weighted"),
            ("speech teacher", "teacher_speech", "weighted"),
            ("music teacher", "teacher_music", "weighted"), ("theta0", "theta0", "last"),
            ("speech student", tag_of("student_speech", cfg, seed), "last"),
            ("music student", tag_of("student_music", cfg, seed), "last")]
    acc = {tag: probe.mean_scores(rows, tag, layer) for _, tag, layer in cols}
    lines = ["| task | domain | chance | " + " | ".join(c[0] for c in cols) + " |", "|---" * (len(cols) + 3) + "|"]
    for t, (domain, _) in tasks.PROBE_TASKS.items():
        n_classes = next((r["classes"] for r in rows if r["task"] == t), 0)
        cells = []
        for _, tag, layer in cols:
            cell = f"{acc[tag][t]:.3f}" if t in acc[tag] else "-"
            if tag == f"teacher_{domain}" and t in acc[tag]:
                beats = all(t in acc[b] and acc[tag][t] - acc[b][t] > paired_se(cfg, tag, b, "weighted", lb, t)
                            for _, b, lb in (cols[0], cols[1 if domain == "speech" else 2]))
                cell = f"**{cell}**" if beats else cell
            cells.append(cell)
        lines.append(f"| {t} | {domain} | {1 / max(n_classes, 1):.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(cfg: Config) -> str:
    """Distillation cost per run kind, mean over seeds, from the metrics each student.pt records."""
    seeds = [int(s) for s in cfg.seeds.split(",")]
    lines = ["| run | steps | wall time (s) | teacher clip-forwards | audio-s/s | peak memory (MB) |",
             "|---|---|---|---|---|---|"]
    for name in ("student_speech", "student_music", "ensemble", "ensemble_2x"):
        ms = [td.load_checkpoint(p, "") for p in (student_paths(cfg, s)[name] for s in seeds) if os.path.exists(p)]
        if ms:
            get = lambda key: np.mean([m["metrics"].get(key, np.nan) for m in ms])  # noqa: E731
            cells = [f"{get(k):.0f}" for k in ("wall_s", "teacher_clip_forwards", "audio_s_per_s", "peak_mem_mb")]
            lines.append(f"| {name} (n={len(ms)}) | {ms[0]['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plots(rows: list, cfg: Config, folder: str = "out") -> list:
    """trade-off curve, per-task curves along lam_music, the grid heat map (if probed), tau diagnosis -> paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    seeds, written = [int(s) for s in cfg.seeds.split(",")], []

    def save(fig, name):
        written.append(os.path.join(folder, name))
        fig.tight_layout()
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)

    def mean_std(summaries, key):
        return np.mean([x[key] for x in summaries]), np.std([x[key] for x in summaries])
    stats = {p: [x for x in (summary(rows, merged_tag(cfg, *p, s)) for s in seeds) if x] for p in sweep_points("line")}
    stats = {p: v for p, v in stats.items() if v}
    if stats:
        fig, ax = plt.subplots(figsize=(5, 4))
        sp, mu = (np.array([mean_std(v, k) for v in stats.values()]) for k in ("speech avg", "music avg"))
        ax.errorbar(sp[:, 0], mu[:, 0], xerr=sp[:, 1], yerr=mu[:, 1], marker="o", ms=3,
                    label="task arithmetic (lam_speech 0..1)")
        for label, name in (("speech student", "student_speech"), ("music student", "student_music"),
                            ("ensemble", "ensemble"), ("ensemble 2x", "ensemble_2x"), ("theta0", None)):
            pts = [x for x in (summary(rows, tag_of(name, cfg, s) if name else "theta0") for s in seeds) if x]
            if pts:
                (x, dx), (y, dy) = mean_std(pts, "speech avg"), mean_std(pts, "music avg")
                ax.errorbar(x, y, xerr=dx, yerr=dy, marker="s", ls="", label=label)
        ax.set(xlabel="speech average accuracy", ylabel="music average accuracy",
               title="speech vs music along the merge")
        ax.legend(fontsize=7)
        save(fig, "tradeoff.png")
        fig, ax = plt.subplots(figsize=(6, 4))
        for t in tasks.PROBE_TASKS:
            ax.plot([p[1] for p in stats], [mean_std(v, t)[0] for v in stats.values()], marker=".",
                    ls={"speech": "-", "music": "--"}.get(tasks.PROBE_TASKS[t][0], ":"), label=t)
        ax.set(xlabel="lam_music (lam_speech = 1 - lam_music)", ylabel="test accuracy")
        ax.legend(fontsize=6, ncol=2)
        save(fig, "per_task.png")
    grid = {p: [summary(rows, merged_tag(cfg, *p, s)).get("mean acc") for s in seeds] for p in sweep_points("grid")}
    grid = {p: np.mean([x for x in v if x is not None]) for p, v in grid.items() if any(x is not None for x in v)}
    if len(grid) > 1:  # theta0 alone, the grid's corner, is no grid
        lams = sorted({p[0] for p in sweep_points("grid")})
        img = np.array([[grid.get((a, b), np.nan) for a in lams] for b in lams])
        fig, ax = plt.subplots(figsize=(5, 4))
        h = (lams[1] - lams[0]) / 2  # each cell centred on its lambda
        im = ax.imshow(img, origin="lower", extent=(lams[0] - h, lams[-1] + h, lams[0] - h, lams[-1] + h))
        ax.set_xticks(lams)
        ax.set_yticks(lams)
        fig.colorbar(im, label="mean accuracy, all tasks")
        ax.set(xlabel="lam_speech", ylabel="lam_music", title="task arithmetic over both lambdas")
        save(fig, "grid.png")
    paths = student_paths(cfg, seeds[0])
    if os.path.exists(paths["student_speech"]) and os.path.exists(paths["student_music"]):
        theta0 = td.load_checkpoint(cfg.init, "")["encoder"]
        taus = [task_vector(td.load_checkpoint(paths[k], "")["encoder"], theta0)
                for k in ("student_speech", "student_music")]
        groups = ["conv", "feature_norm", "proj", "pos_conv", "norm", "layers.0", "layers.1"]
        def flat(tau, g):  # the entries of one block
            return torch.cat([v.reshape(-1) for k, v in tau.items() if k == g or k.startswith(g + ".")])
        norms = np.array([[float(flat(tau, g).norm()) for g in groups] for tau in taus])
        cos = [float(torch.nn.functional.cosine_similarity(flat(taus[0], g), flat(taus[1], g), 0)) for g in groups]
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
        x = np.arange(len(groups))
        ax[0].bar(x - 0.2, norms[0], 0.4, label="tau_speech")
        ax[0].bar(x + 0.2, norms[1], 0.4, label="tau_music")
        ax[1].bar(x, cos)
        for a, title in zip(ax, ("norm per block", "cos(tau_speech, tau_music)")):
            a.set_xticks(x, groups, rotation=45, fontsize=7)
            a.set_title(title)
        ax[0].legend(fontsize=7)
        save(fig, "tau.png")
    return written


def study_report(cfg: Config) -> str:
    """The study's tables as markdown: the headline table with its paired intervals, the teacher table, the cost
    of the distillations; the plots are written beside them."""
    rows = probe.read_results(cfg.results)
    folder = os.path.join("out", f"data_{cfg.data}") if cfg.data else "out"  # the ablation's own plots
    os.makedirs(folder, exist_ok=True)
    return "\n\n".join([headline_table(rows, cfg), teacher_table(rows, cfg), cost_table(cfg),
                         "plots: " + ", ".join(plots(rows, cfg, folder))])


def reproduce(cfg: Config) -> None:
    """python merge.py --reproduce --seeds 0,1,2: the whole study in the paper's order, making whatever is missing:
    1) the data, 2) theta0, 3) per seed the speech and music students and the ensembles (the same steps, and twice
    them), 4) the probes of references, students, ensembles and the lambda line, 5) the tables and plots (study.md).
    A second call redoes nothing; an interrupted one resumes (a killed distillation from its last checkpoint)."""
    seeds, line = [int(s) for s in cfg.seeds.split(",")], Config(**{**asdict(cfg), "sweep": "line"})
    jobs = [Job("data", 60.0, partial(tasks.ensure_data, cfg.data_dir),
                partial(os.path.exists, os.path.join(cfg.data_dir, "manifest.json"))),
            Job("theta0", 2.0, partial(td.load_or_make_theta0, distil_config(cfg, "student_speech", 0), "cpu"),
                partial(os.path.exists, cfg.init), ("data",))]
    if cfg.cache_crops:  # each bank once, before the runs that share it
        for name in ("student_speech", "student_music", "ensemble"):
            run = distil_config(cfg, name, 0)
            needs = ("bank speech", "bank music") if run.domain == "both" else ("theta0",)  # it copies their halves
            jobs.append(Job(f"bank {run.domain}", cfg.cache_crops * 0.015, partial(td.build_target_bank, run),
                            partial(bank_ready, run), needs))
    for seed in seeds:
        for name, path in student_paths(cfg, seed).items():
            run = distil_config(cfg, name, seed)
            jobs.append(Job(f"distil {name} seed {seed}", run.steps * 0.13, partial(distil, run),
                            partial(os.path.exists, path), (f"bank {run.domain}",) if cfg.cache_crops else ("theta0",)))
    jobs += sweep_jobs(line)
    jobs.append(Job("tables and plots", 5.0, partial(write_report, line), lambda: False, tuple(j.name for j in jobs)))
    run_jobs(jobs, os.path.join("out", "reproduce_times.json"), cfg.workers)
    with open(os.path.join("out", "study.md")) as f:
        print(f.read())


def distil_config(cfg: Config, name: str, seed: int) -> td.Config:
    """The tiny_distill.py run that makes student_paths(cfg, seed)[name] (the README lists these commands)."""
    domain, times = {"student_speech": ("speech", 1), "student_music": ("music", 1), "ensemble": ("both", 1),
                     "ensemble_2x": ("both", 2)}[name]
    return td.Config(domain=domain, data=cfg.data, seed=seed, steps=times * cfg.steps,
                     out_dir=os.path.dirname(student_paths(cfg, seed)[name]), init=cfg.init,
                     teacher_speech=cfg.teacher_speech, teacher_music=cfg.teacher_music, data_dir=cfg.data_dir,
                     cache_targets=cfg.cache_crops > 0, cache_crops=cfg.cache_crops)


def bank_ready(run: td.Config) -> bool:
    """Whether a bank of run's data setting, crop length and size holds every teacher's targets (a hint for skipping
    the job only: a run whose bank is missing makes it itself)."""
    data = {"speech": "speech", "music": "music", "both": "mix"}[run.domain] if not run.data else run.data
    teachers = ["speech", "music"] if run.domain == "both" else [run.domain]
    names = []
    for d in teachers:
        enc_cfg, _, fp, _ = td.read_encoder(run.teacher_speech if d == "speech" else run.teacher_music)
        names.append(f"{d}_{fp}_{'-'.join(map(str, td.target_layers(enc_cfg.layers)))}.npy")
    prefix, root = f"{data}_{int(run.crop_s * tasks.SR)}_{run.cache_crops}_", os.path.join(run.data_dir, "cache")
    return any(d.startswith(prefix) and all(os.path.exists(os.path.join(root, d, n)) for n in names)
               for d in (os.listdir(root) if os.path.isdir(root) else []))


def distil(run: td.Config) -> None:
    """One distillation, from its last checkpoint if an earlier call was interrupted."""
    td.train(td.Config(**{**asdict(run), "resume": os.path.exists(os.path.join(run.out_dir, "checkpoint.pt"))}))


# ================================================================================================================
# Part 2: plumbing (skip on first read): the job runner with progress and ETA, the command line

class Job(NamedTuple):
    name: str
    estimate_s: float  # a guess, scaled by how fast the finished jobs ran, for the ETA
    run: Callable  # a picklable callable (a partial of a module function): workers run it in their own process
    done: Callable  # () -> bool: already made, skipped
    needs: tuple = ()  # names of the jobs that must finish first


def run_jobs(jobs: list, times_path: str, workers: int = 1) -> None:
    """Run the jobs not yet done, `workers` at a time in their own processes (one torch thread each, so the numbers
    do not depend on how many run), each once its needs are done; one progress line per job with an ETA for the
    whole; each job's own output goes to out/logs/<job>.log, its wall time to times_path."""
    times = json.load(open(times_path)) if os.path.exists(times_path) else {}
    finished, pending = set(), []
    for i, job in enumerate(jobs):
        if job.done():
            finished.add(job.name)
            print(f"[{i + 1}/{len(jobs)}] {job.name}: done before, skipped", flush=True)
        else:
            pending.append(job)
    ctx = __import__("multiprocessing").get_context("spawn")
    results, inboxes, pool, busy = ctx.Queue(), [], [], {}
    spent, guessed, t_start, count = 0.0, 0.0, time.time(), len(finished)
    try:
        for w in range(workers if workers > 1 else 0):  # one worker runs in this process
            inboxes.append(ctx.Queue())
            pool.append(ctx.Process(target=_worker, args=(w, inboxes[w], results)))  # not daemonic: tasks.py forks
            pool[w].start()
        while pending or busy:
            for w in range(workers):
                ready = next((j for j in pending if set(j.needs) <= finished), None) if w not in busy else None
                if ready is not None:
                    pending.remove(ready)
                    busy[w] = ready
                    if workers > 1:
                        inboxes[w].put((ready.name, ready.run))
                    else:
                        results.put((w, *run_logged(ready.name, ready.run)))
            if not busy:
                raise ValueError(f"jobs wait for jobs that do not exist: {[j.name for j in pending][:3]}")
            w, took, error = results.get()
            job = busy.pop(w)
            if error:
                raise ValueError(f"{job.name} failed: {error} (its output: {log_path(job.name)})")
            finished.add(job.name)
            count, spent, guessed, times[job.name] = count + 1, spent + took, guessed + job.estimate_s, round(took, 1)
            os.makedirs(os.path.dirname(os.path.abspath(times_path)), exist_ok=True)
            with open(times_path + ".tmp", "w") as f:
                json.dump(times, f, indent=1)
            os.replace(times_path + ".tmp", times_path)
            scale = spent / guessed if guessed >= 120 else 1.0  # the machine's speed, once enough work says so
            left = (sum(j.estimate_s for j in pending) + sum(j.estimate_s for j in busy.values()) / 2) * scale / workers
            print(f"[{count}/{len(jobs)}] {job.name}: {took:.0f} s; {(time.time() - t_start) / 60:.1f} min so far, "
                  f"ETA {left / 60:.1f} min", flush=True)
    finally:
        for p in pool:
            p.terminate()


def log_path(name: str) -> str:
    return os.path.join("out", "logs", re.sub(r"[^\w.-]", "_", name) + ".log")


def run_logged(name: str, run: Callable) -> tuple:
    """Run one job with one torch thread, its output to its log -> (seconds, error line or "")."""
    t0, threads = time.time(), torch.get_num_threads()
    torch.set_num_threads(1)
    os.makedirs(os.path.dirname(log_path(name)), exist_ok=True)
    with open(log_path(name), "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            run()
            error = ""
        except Exception as e:  # every failure becomes the one line the caller prints
            error = tasks.one_line(e)[len("error: "):]
    torch.set_num_threads(threads)
    return time.time() - t0, error


def _worker(w: int, inbox, results) -> None:
    """Job runner number w, a process of its own, with the allocator setting of every script; decoded probe clips
    are kept across the jobs it runs (probe_model's AUDIO)."""
    tasks.keep_freed_memory()
    while True:
        name, run = inbox.get()
        results.put((w, *run_logged(name, run)))


def write_report(cfg: Config) -> None:
    """The study's tables into out/study.md (and the log of this job)."""
    report = study_report(cfg)
    print(report, flush=True)
    path = os.path.join("out", f"study_{cfg.data}.md" if cfg.data else "study.md")
    with open(path + ".tmp", "w") as f:
        f.write(f"Made by python merge.py --reproduce --seeds {cfg.seeds}" + (f" --data {cfg.data}" if cfg.data else "")
                + f" ({time.strftime('%Y-%m-%d %H:%M')})\n\n{report}\n")
    os.replace(path + ".tmp", path)


def check_config(cfg: Config) -> None:
    tasks.check_config(cfg, ranges=dict(keep_frac=(1e-6, 1), drop_prob=(0, 0.999), probe_seeds=(1, None),
                                        cache_crops=(0, None), steps=(1, None), probe_steps=(1, None),
                                        workers=(1, None)),
                       choices=dict(method=("ta", "ties", "dare"), sweep=("", "line", "paper", "grid"),
                                    data=("", "speech")))
    if not all(s.strip().isdigit() for s in cfg.seeds.split(",")):
        raise ValueError(f"--seeds must be comma-separated seeds like 0,1,2, got {cfg.seeds!r}")


def main(argv=None):
    cfg = Config(**vars(tasks.config_parser(Config, __doc__).parse_args(argv)))
    tasks.keep_freed_memory()
    print(json.dumps(asdict(cfg)), flush=True)
    try:
        check_config(cfg)
        if cfg.reproduce:
            reproduce(cfg)
        elif cfg.table:
            print(study_report(cfg))
        elif cfg.sweep:  # the students exist; ensembles that do not are left out
            missing = {tag_of(n, cfg, s) for s in map(int, cfg.seeds.split(",")) for n, p in
                       student_paths(cfg, s).items() if n.startswith("ensemble") and not os.path.exists(p)}
            jobs = [j for j in sweep_jobs(cfg) if j.name[len("probe "):] not in missing]
            names = {j.name for j in jobs}  # no distillations here: waiting is for probes in this list only
            run_jobs([j._replace(needs=tuple(n for n in j.needs if n in names)) for j in jobs],
                     os.path.join("out", "sweep_times.json"), cfg.workers)
            print(headline_table(probe.read_results(cfg.results), cfg))
        elif cfg.out:
            paths = student_paths(cfg, int(cfg.seeds.split(",")[0]))
            write_merged(cfg, paths["student_speech"], paths["student_music"], cfg.out)
            print(f"wrote {cfg.out}: theta0 + {cfg.lam_speech} tau_speech + {cfg.lam_music} tau_music ({cfg.method})")
        else:
            raise ValueError("nothing to do: give --out PATH (one merge), --sweep line|paper|grid, --table or "
                             "--reproduce")
    except (ValueError, OSError, KeyboardInterrupt) as e:
        sys.exit(tasks.one_line(e))


if __name__ == "__main__":
    main()
