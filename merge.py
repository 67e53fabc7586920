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
import json
import os
import sys
from dataclasses import asdict, dataclass

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
    probe_seeds: int = 3  # probe seeds per merged model
    # files
    results: str = "out/results.jsonl"  # probe results, read and appended
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
    out, i = {}, 0
    for k, v in like.items():
        out[k] = flat[i:i + v.numel()].view_as(v)
        i += v.numel()
    return out


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


def write_merged(cfg: Config, speech_path: str, music_path: str, out: str) -> str:
    state, theta0 = merged_state(cfg, speech_path, music_path)
    td.save_checkpoint(out, encoder=state, encoder_config=theta0["encoder_config"],
                       theta0_fingerprint=theta0["fingerprint"],
                       merge=dict(asdict(cfg), speech=speech_path, music=music_path))
    return out


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
    method = "" if cfg.method == "ta" else cfg.method + "_"
    return tag_of(f"{method}ta_{lam_speech:.1f}_{lam_music:.1f}", cfg, seed)


def probe_once(path: str, tag: str, layer: str, cfg: Config, done: set) -> None:
    """probe.py on every task unless `tag` is already in the results."""
    if tag in done:
        return
    if path != "logmel" and not os.path.exists(path.split(":", 1)[-1]):
        raise ValueError(f"{path} not found; run the distillations first (see README, 'Reproduce')")
    print(f"probing {tag} ({path})", flush=True)
    probe.run(probe.Config(model=path, tag=tag, layer=layer, seeds=cfg.probe_seeds, results=cfg.results,
                           data_dir=cfg.data_dir))
    done.add(tag)


def run_sweep(cfg: Config) -> None:
    done = {r["model"] for r in probe.read_results(cfg.results)}
    probe_once("logmel", "logmel", "last", cfg, done)
    probe_once(td.Config.teacher_speech, "teacher_speech", "weighted", cfg, done)
    probe_once(td.Config.teacher_music, "teacher_music", "weighted", cfg, done)
    probe_once(cfg.init, "theta0", "last", cfg, done)
    for seed in [int(s) for s in cfg.seeds.split(",")]:
        paths = student_paths(cfg, seed)
        for name, path in paths.items():
            if name.startswith("ensemble") and not os.path.exists(path):
                print(f"skipping {name} seed {seed}: {path} not found", flush=True)
                continue
            probe_once(path, tag_of(name, cfg, seed), "last", cfg, done)
        for lam_speech, lam_music in sweep_points(cfg.sweep):
            tag = merged_tag(cfg, lam_speech, lam_music, seed)
            if tag in done:
                continue
            out = os.path.join("out", "merged", tag + ".pt")
            write_merged(Config(**{**asdict(cfg), "lam_speech": lam_speech, "lam_music": lam_music}),
                         paths["student_speech"], paths["student_music"], out)
            probe_once(out, tag, "last", cfg, done)


# ----------------------------------------------------------------------------------------------------------------
# Tables and plots from out/results.jsonl

def summary(rows: list, tag: str, split: str = "test") -> dict:
    """One model's per-task accuracies, speech and music averages and the overall score (x1000) against logmel
    and the domain teachers, all on `split`. Empty if the model or a reference has no rows."""
    mine = probe.mean_scores(rows, tag, split=split)
    base = probe.mean_scores(rows, "logmel", split=split)
    ref = {}  # each task's reference: its own domain's teacher
    for domain in ("speech", "music"):
        ref.update({t: v for t, v in probe.mean_scores(rows, f"teacher_{domain}", split=split).items()
                    if tasks.PROBE_TASKS[t][0] == domain})
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
    for lam_speech in REPORTED:
        lam_music = round(1 - lam_speech, 1)
        entries.append((f"TA lam {lam_speech}/{lam_music}", [merged_tag(cfg, lam_speech, lam_music, s) for s in seeds]))
    pick, _ = valid_pick(rows, cfg, seeds)
    if pick:
        entries.append((f"TA valid pick {pick[0]}/{pick[1]}", [merged_tag(cfg, *pick, s) for s in seeds]))
    for method in ("ties", "dare"):  # ablation rows, at the paper's points (--method M --sweep paper)
        other = Config(**{**asdict(cfg), "method": method})
        for lam_speech, lam_music in sweep_points("paper"):
            entries.append((f"{method.upper()} lam {lam_speech}/{lam_music}",
                            [merged_tag(other, lam_speech, lam_music, s) for s in seeds]))
        pick, _ = valid_pick(rows, other, seeds, "paper")
        if pick:
            entries.append((f"{method.upper()} valid pick {pick[0]}/{pick[1]}",
                            [merged_tag(other, *pick, s) for s in seeds]))
    return entries


def test_se(rows: list, tag: str) -> float:
    """Standard error of a model's mean test accuracy over the tasks from the finite test sets alone (binomial,
    sqrt(sum_t p_t (1 - p_t) / n_t) / n_tasks): the noise floor no number of seeds removes."""
    p, n = probe.mean_scores(rows, tag), {r["task"]: r["n_test"] for r in rows if r["model"] == tag}
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
                 f"above; the seed std comes on top of it.")
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
                    ls="-" if tasks.PROBE_TASKS[t][0] == "speech" else "--", label=t)
        ax.set(xlabel="lam_music (lam_speech = 1 - lam_music)", ylabel="test accuracy")
        ax.legend(fontsize=6, ncol=2)
        save(fig, "per_task.png")
    grid = {p: [summary(rows, merged_tag(cfg, *p, s)).get("mean acc") for s in seeds] for p in sweep_points("grid")}
    grid = {p: np.mean([x for x in v if x is not None]) for p, v in grid.items() if any(x is not None for x in v)}
    if grid:
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


# ================================================================================================================
# Part 2: plumbing (skip on first read): the command line

def check_config(cfg: Config) -> None:
    tasks.check_config(cfg, ranges=dict(keep_frac=(1e-6, 1), drop_prob=(0, 0.999), probe_seeds=(1, None)),
                       choices=dict(method=("ta", "ties", "dare"), sweep=("", "line", "paper", "grid"),
                                    data=("", "speech")))
    if not all(s.strip().isdigit() for s in cfg.seeds.split(",")):
        raise ValueError(f"--seeds must be comma-separated seeds like 0,1,2, got {cfg.seeds!r}")


def main(argv=None):
    cfg = Config(**vars(tasks.config_parser(Config, __doc__).parse_args(argv)))
    print(json.dumps(asdict(cfg)), flush=True)
    try:
        check_config(cfg)
        if cfg.table:
            rows = probe.read_results(cfg.results)
            print(headline_table(rows, cfg) + "\n\n" + cost_table(cfg))
            folder = os.path.join("out", f"data_{cfg.data}") if cfg.data else "out"  # the ablation's own plots
            os.makedirs(folder, exist_ok=True)
            print("plots: " + ", ".join(plots(rows, cfg, folder)))
        elif cfg.sweep:
            run_sweep(cfg)
            print(headline_table(probe.read_results(cfg.results), cfg))
        elif cfg.out:
            paths = student_paths(cfg, int(cfg.seeds.split(",")[0]))
            write_merged(cfg, paths["student_speech"], paths["student_music"], cfg.out)
            print(f"wrote {cfg.out}: theta0 + {cfg.lam_speech} tau_speech + {cfg.lam_music} tau_music ({cfg.method})")
        else:
            raise ValueError("nothing to do: give --out PATH (one merge), --sweep line|paper|grid, or --table")
    except (ValueError, OSError, KeyboardInterrupt) as e:
        sys.exit(tasks.one_line(e))


if __name__ == "__main__":
    main()
