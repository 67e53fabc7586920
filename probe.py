"""Frozen-feature probes: how good is an encoder on the speech (SUPERB-like) and music (MARBLE-like) tasks?

As in the paper's evaluation, the encoder is frozen and a small head is trained per task. Here:

  frozen encoder -> hidden states of every layer -> mean over time (frame features for PR)
  -> standardised with train statistics -> one linear layer, fixed step budget
  -> L2 strength and stopping step chosen on valid -> test read once, for the chosen probe only.

`--layer last` feeds the last layer (the paper's protocol for students), `--layer weighted` a learnable softmax-
weighted sum of all layers (SUPERB's protocol, used for teachers), `--layer N` layer N (0 = the transformer input).
Each probe seed is a new init and minibatch order. One JSON line per (model, task, layer, seed) goes to --results.

Models: `logmel` (80 log-mel bands, 25 ms window, 20 ms hop: the SUPERB "FBANK" baseline), a checkpoint of this
project or a real HuBERT-family one (`path`), or `random:path` (that architecture, freshly initialised).
Tasks: `all`, `speech`, `music`, names (`KS,IC,Pitch`), or `csv:PATH` for your own audio: a CSV with columns
path,label,split (paths relative to the CSV, split in train/valid/test; any format soundfile reads, any sample rate,
length and channel count: see tasks.read_audio for the rule).

Overall score (SUPERB @ SLT 2022): 1000/n * sum_t (s_t - s_t^logmel) / (s_t^ref - s_t^logmel), with s^ref the
domain's teacher (rows tagged --ref_speech / --ref_music in --results).

Usage:  python probe.py --model logmel --task all
        python probe.py --model out/music_music_s0/student.pt --tag music_student --layer last
"""
import csv
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

import tasks
import tiny_distill


@dataclass
class Config:
    # what to probe
    model: str = "logmel"  # logmel | path/to/checkpoint.pt (or a HuBERT-family folder) | random:path/to/checkpoint.pt
    task: str = "all"  # all | speech | music | comma-separated names | csv:PATH
    layer: str = "last"  # last (paper, students) | weighted (SUPERB, teachers) | an integer layer index
    tag: str = ""  # name stored under "model" in the results (default: --model)
    # the probe
    seeds: int = 3  # probe seeds (init and minibatch order); mean and std are reported
    steps: int = 400  # optimisation steps per probe (the fixed budget)
    batch: int = 256  # examples (frames for PR) per step
    lr: float = 3e-3  # Adam learning rate
    eval_every: int = 25  # steps between evaluations on valid (the stopping step is chosen among these)
    # files
    results: str = "out/results.jsonl"  # JSON lines appended here
    data_dir: str = "data"  # where tasks.py wrote the probe sets (made if missing)
    max_seconds: float = 30.0  # longer external clips are cut to their centre this long
    # the overall score
    ref_speech: str = "teacher_speech"  # tag whose rows give s_ref for speech tasks in the overall score
    ref_music: str = "teacher_music"  # tag whose rows give s_ref for music tasks
    # machine
    threads: int = 0  # torch threads (0 = torch's default)


# DEVIATION: one linear layer on mean-pooled features for every task (frames for PR), where SUPERB and MARBLE use
# task-specific heads (BiLSTM + CTC for ASR, MLP probes): cheap enough to probe dozens of merged models on a CPU.
L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)  # L2 strengths tried side by side; the best on valid is kept
SPLITS = ("train", "valid", "test")


# ----------------------------------------------------------------------------------------------------------------
# Tasks: our generated CSVs and anyone else's, through one reader

class Row(NamedTuple):
    line: int  # in the CSV, for error messages
    path: str  # the audio file
    label: object  # a class name, or a list of frame labels (PR)
    split: str


def load_task(spec: str, data_dir: str) -> dict:
    """A task name (KS, ...) or csv:PATH -> dict(name, domain, csv, rows=[Row], frame_level). Every problem is one
    line naming the file and row."""
    if spec.startswith("csv:"):
        path, name, domain = spec[4:], os.path.splitext(os.path.basename(spec[4:]))[0], "external"
    elif spec in tasks.PROBE_TASKS:
        path, name, domain = os.path.join(data_dir, "probe", f"{spec}.csv"), spec, tasks.PROBE_TASKS[spec][0]
    else:
        raise ValueError(f"unknown task {spec!r}; use one of {list(tasks.PROBE_TASKS)}, all, speech, music or csv:PATH")
    if not os.path.isfile(path):
        raise ValueError(f"task CSV not found: {path}" + ("" if spec.startswith("csv:") else "; run python tasks.py"))
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        body = list(reader)
    label_col = "frames" if "frames" in header else "label"
    missing = [c for c in ("path", "split", label_col) if c not in header]
    if missing:
        raise ValueError(f"{path}: header {header} lacks column(s) {missing}; need path,label,split")
    col = {c: header.index(c) for c in ("path", "split", label_col)}
    rows, root = [], os.path.dirname(os.path.abspath(path))
    for line, cells in enumerate(body, start=2):
        if not any(c.strip() for c in cells):
            continue  # blank line
        if len(cells) < len(header):
            raise ValueError(f"{path}:{line}: {len(cells)} cells, the header has {len(header)}")
        audio, split, label = (cells[col[c]].strip() for c in ("path", "split", label_col))
        if split not in SPLITS:
            raise ValueError(f"{path}:{line}: split must be train, valid or test, got {split!r}")
        if not audio:
            raise ValueError(f"{path}:{line}: empty path")
        audio = audio if os.path.isabs(audio) else os.path.join(root, audio)
        if not os.path.isfile(audio):
            raise ValueError(f"{path}:{line}: audio file not found: {audio}")
        if label == "":
            raise ValueError(f"{path}:{line}: empty {label_col}")
        rows.append(Row(line, audio, label.split() if label_col == "frames" else label, split))
    for s in SPLITS:
        if not any(r.split == s for r in rows):
            raise ValueError(f"{path}: no rows in split {s!r}; every split needs at least one row")
    train_labels = {lab for r in rows if r.split == "train"
                    for lab in (r.label if label_col == "frames" else [r.label])}
    if len(train_labels) < 2:
        raise ValueError(f"{path}: the train split has {len(train_labels)} class(es); a probe needs at least 2")
    return dict(name=name, domain=domain, csv=path, rows=rows, frame_level=label_col == "frames")


def task_list(spec: str) -> list:
    if spec == "all":
        return list(tasks.PROBE_TASKS)
    if spec in ("speech", "music"):
        return [t for t, (d, _) in tasks.PROBE_TASKS.items() if d == spec]
    return [s.strip() for s in spec.split(",") if s.strip()] if not spec.startswith("csv:") else [spec]


# ----------------------------------------------------------------------------------------------------------------
# Frozen features

class LogMel:
    """The FBANK baseline as a one-layer "model" on the encoders' frame grid (frame-level PR needs the same grid)."""
    n_layers = 1

    def __call__(self, wav: torch.Tensor) -> list:
        return [tasks.log_mel(wav)]  # (B, T, 80)


def load_model(spec: str, device: str):
    """--model -> a callable wav (B, n) -> list of (B, T, C) hidden states, all layers."""
    if spec == "logmel":
        return LogMel()
    if spec.startswith("random:"):
        return tiny_distill.random_like(spec[len("random:"):], device)
    if not os.path.exists(spec):
        raise ValueError(f"--model {spec!r} is neither logmel, random:PATH nor an existing checkpoint")
    return tiny_distill.load_encoder(spec, device)


@torch.no_grad()
def extract(model, clips: dict, device: str, max_seconds: float, batch_samples: int = 64 * tasks.SR) -> dict:
    """clips: path -> (needs_frames, where) -> path -> (pooled (L, C) float32, frames (L, T, C) float16 or None).
    Clips of equal length are batched (no padding, so no mask is needed and batching cannot change a feature)."""
    wavs = {}
    for path, (_, where) in clips.items():
        try:
            wavs[path] = tasks.read_audio(path, max_seconds)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    by_len = {}
    for path, w in wavs.items():
        by_len.setdefault(len(w), []).append(path)
    feats, done, t0 = {}, 0, time.time()
    for n, paths in sorted(by_len.items()):
        per_batch = max(1, batch_samples // n)
        for i in range(0, len(paths), per_batch):
            chunk = paths[i:i + per_batch]
            wav = torch.from_numpy(np.stack([wavs[p] for p in chunk])).to(device)  # (B, n)
            hidden = torch.stack([h.float() for h in model(wav)], 1)  # (B, L, T, C)
            pooled = hidden.mean(2).cpu()  # (B, L, C): mean over time
            for j, p in enumerate(chunk):
                feats[p] = (pooled[j], hidden[j].half().cpu() if clips[p][0] else None)
            done += len(chunk)
        if time.time() - t0 > 10 and done < len(wavs):
            print(f"  features: {done}/{len(wavs)} clips, {time.time() - t0:.0f} s", flush=True)
    return feats


def task_arrays(task: dict, feats: dict) -> dict:
    """split -> (X (N, L, C), y (N,)) with class indices over the task's sorted labels."""
    if task["frame_level"]:
        classes = sorted({lab for r in task["rows"] for lab in r.label})
    else:
        classes = sorted({r.label for r in task["rows"]})
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for s in SPLITS:
        xs, ys = [], []
        for r in task["rows"]:
            if r.split != s:
                continue
            pooled, frames = feats[r.path]
            if task["frame_level"]:
                T = frames.shape[1]
                if abs(T - len(r.label)) > 2:
                    raise ValueError(f"{task['csv']}:{r.line}: {len(r.label)} frame labels, but the audio has {T} "
                                     "frames")
                m = min(T, len(r.label))
                xs.append(frames[:, :m].transpose(0, 1).float())  # (m, L, C)
                ys += [index[lab] for lab in r.label[:m]]
            else:
                xs.append(pooled[None])
                ys.append(index[r.label])
        out[s] = (torch.cat(xs), torch.tensor(ys))
    out["classes"] = classes
    return out


# ----------------------------------------------------------------------------------------------------------------
# The probe: one linear layer per L2 strength, trained side by side; chosen on valid; test read once

def layer_view(X: torch.Tensor, layer: str) -> torch.Tensor:
    """(N, L, C) -> the layers the probe sees: all of them for weighted, else one, (N, 1, C)."""
    if layer == "weighted":
        return X
    if layer == "last":
        return X[:, -1:]
    i = int(layer)
    if not -X.shape[1] <= i < X.shape[1]:
        raise ValueError(f"--layer {i} out of range: this model has layers 0..{X.shape[1] - 1}")
    return X[:, i:i + 1]


def probe_logits(X: torch.Tensor, w: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """X (N, L, C), softmax layer weights w (G, L), W (G, C, K), b (G, K) -> logits (G, N, K)."""
    mixed = torch.einsum("nlc,gl->gnc", X, torch.softmax(w, -1))  # (G, N, C)
    return torch.einsum("gnc,gck->gnk", mixed, W) + b[:, None]


def accuracy(X, y, params, chunk: int = 8192) -> torch.Tensor:
    """Accuracy of each of the G probes -> (G,)."""
    correct = 0
    for i in range(0, len(y), chunk):
        correct = correct + (probe_logits(X[i:i + chunk], *params).argmax(-1) == y[i:i + chunk]).sum(-1)
    return correct.float() / len(y)


def fit_probe(data: dict, layer: str, seed: int, cfg: Config) -> dict:
    """Train len(L2_GRID) linear probes with Adam for cfg.steps; keep, per probe, the parameters of its best
    valid evaluation; pick the probe with the best valid accuracy; only then compute its test accuracy."""
    g = torch.Generator().manual_seed(seed)
    X = {s: layer_view(data[s][0], layer) for s in SPLITS}
    y = {s: data[s][1] for s in SPLITS}
    mean, std = X["train"].mean(0), X["train"].std(0) + 1e-5  # (L, C), train statistics only
    X = {s: (x - mean) / std for s, x in X.items()}
    G, (N, L, C), K = len(L2_GRID), X["train"].shape, len(data["classes"])
    w = torch.zeros(G, L, requires_grad=True)
    W = (torch.randn(G, C, K, generator=g) * 0.01).requires_grad_()
    b = torch.zeros(G, K, requires_grad=True)
    l2 = torch.tensor(L2_GRID)
    opt = torch.optim.Adam([w, W, b], lr=cfg.lr)
    best_acc, best_step = torch.full((G,), -1.0), torch.zeros(G, dtype=torch.long)
    best = [p.detach().clone() for p in (w, W, b)]
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(0, N, (min(cfg.batch, N),), generator=g)
        logits = probe_logits(X["train"][idx], w, W, b)  # (G, B, K)
        loss = F.cross_entropy(logits.reshape(-1, K), y["train"][idx].repeat(G), reduction="sum") / len(idx)
        loss = loss + (l2 * W.pow(2).sum((1, 2))).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            with torch.no_grad():
                acc = accuracy(X["valid"], y["valid"], (w, W, b))
                better = acc > best_acc
                best_acc, best_step = torch.where(better, acc, best_acc), torch.where(better, step, best_step)
                for kept, p in zip(best, (w, W, b)):
                    kept[better] = p[better]
    pick = int(best_acc.argmax())  # the first of the best on valid; test has not been looked at
    with torch.no_grad():
        chosen = [p[pick:pick + 1] for p in best]
        test_acc = float(accuracy(X["test"], y["test"], chosen)[0])
        layer_weights = torch.softmax(chosen[0][0], -1).tolist()
    return dict(valid=float(best_acc[pick]), test=test_acc, l2=L2_GRID[pick], step=int(best_step[pick]),
                layer_weights=layer_weights if layer == "weighted" else None)


# ----------------------------------------------------------------------------------------------------------------
# Results and the overall score

def read_results(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def mean_scores(rows: list, model: str, layer: str = None, split: str = "test") -> dict:
    """task -> mean accuracy on `split` over probe seeds for `model` (layer-filtered unless None). If a model was
    probed more than once, the latest run of each (task, layer, seed) counts."""
    latest = {}
    for r in rows:
        if r["model"] == model and (layer is None or r["layer"] == layer):
            latest[(r["task"], r["layer"], r["seed"])] = r[split]
    by_task = {}
    for (task, _, _), v in latest.items():
        by_task.setdefault(task, []).append(v)
    return {t: float(np.mean(v)) for t, v in by_task.items()}


def overall_score(scores: dict, base: dict, ref: dict) -> float:
    """SUPERB @ SLT 2022: 1000/n * sum_t (s_t - base_t) / (ref_t - base_t) over the tasks in `scores`."""
    assert scores, "no task to score"
    return 1000.0 / len(scores) * sum((scores[t] - base[t]) / (ref[t] - base[t]) for t in scores)


def score_lines(rows: list, model: str, layer: str, cfg: Config) -> list:
    """Overall, speech and music scores of `model` against logmel and the domain teachers, as printable lines."""
    mine, base = mean_scores(rows, model, layer), mean_scores(rows, "logmel")
    refs = {"speech": mean_scores(rows, cfg.ref_speech, layer), "music": mean_scores(rows, cfg.ref_music, layer)}
    ref, note = {}, []
    for t in mine:
        domain = tasks.PROBE_TASKS.get(t, ("external",))[0]
        if t in refs.get(domain, {}):
            ref[t] = refs[domain][t]
        else:
            ref[t] = 1.0
            note.append(t)
    # a reference at or below the baseline would flip the sign of a task's term: such tasks are left out, and said
    skipped = [t for t in mine if t in base and ref[t] <= base[t] + 0.005]
    usable = {t: s for t, s in mine.items() if t in base and t not in skipped}
    if not usable:
        return ["overall score: needs logmel rows for these tasks (python probe.py --model logmel --task all)"]
    lines = []
    for name, keep in (("speech", "speech"), ("music", "music"), ("overall", None)):
        part = {t: s for t, s in usable.items() if keep is None or tasks.PROBE_TASKS.get(t, ("",))[0] == keep}
        if part:
            lines.append(f"{name} score: {overall_score(part, base, ref):.1f} over {len(part)} tasks")
    if note:
        lines.append(f"(s_ref = 1.0 for {', '.join(note)}: no rows tagged {cfg.ref_speech}/{cfg.ref_music} yet)")
    if skipped:
        lines.append(f"(left out of the score, reference not above logmel: {', '.join(skipped)})")
    return lines


def run(cfg: Config) -> None:
    """Extract features once, probe every task and seed, append the rows, print the table and scores."""
    tag = cfg.tag or cfg.model
    names = task_list(cfg.task)
    if any(not n.startswith("csv:") for n in names):
        tasks.ensure_data(cfg.data_dir)  # makes the probe sets on a fresh clone
    task_defs = [load_task(n, cfg.data_dir) for n in names]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(cfg.model, device)
    n_layers = getattr(model, "n_layers", None) or model.cfg.layers + 1
    if cfg.layer not in ("last", "weighted") and not -n_layers <= int(cfg.layer) < n_layers:
        raise ValueError(f"--layer {cfg.layer} out of range: {cfg.model} has layers 0..{n_layers - 1}")
    clips = {}
    for t in task_defs:
        for r in t["rows"]:
            clips[r.path] = (clips.get(r.path, (False,))[0] or t["frame_level"], f"{t['csv']}:{r.line}")
    t0 = time.time()
    feats = extract(model, clips, device, cfg.max_seconds)
    print(f"features of {len(clips)} clips in {time.time() - t0:.1f} s", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(cfg.results)), exist_ok=True)
    table = [f"| task | domain | classes | chance | valid | test ({tag}, layer {cfg.layer}, {cfg.seeds} seeds) |",
             "|---|---|---|---|---|---|"]
    for t in task_defs:
        data = task_arrays(t, feats)
        res = []
        for seed in range(cfg.seeds):
            r = fit_probe(data, cfg.layer, seed, cfg)
            row = dict(model=tag, task=t["name"], layer=cfg.layer, seed=seed, metric="acc", valid=r["valid"],
                       test=r["test"], n_test=len(data["test"][1]), classes=len(data["classes"]), l2=r["l2"],
                       step=r["step"], layer_weights=r["layer_weights"], time=time.strftime("%Y-%m-%d %H:%M:%S"))
            with open(cfg.results, "a") as f:
                f.write(json.dumps(row) + "\n")
            res.append(r)
        v, te = np.array([r["valid"] for r in res]), np.array([r["test"] for r in res])
        table.append(f"| {t['name']} | {t['domain']} | {len(data['classes'])} | {1 / len(data['classes']):.3f} | "
                     f"{v.mean():.3f} ± {v.std():.3f} | {te.mean():.3f} ± {te.std():.3f} |")
        print(f"  {t['name']}: test {te.mean():.3f} ± {te.std():.3f}", flush=True)
    print("\n".join(table))
    for line in score_lines(read_results(cfg.results), tag, cfg.layer, cfg):
        print(line)


# ================================================================================================================
# Part 2: plumbing (skip on first read): the command line

def check_config(cfg: Config) -> None:
    tasks.check_config(cfg, ranges=dict(seeds=(1, None), steps=(1, None), batch=(1, None), lr=(0, None),
                                        eval_every=(1, None), max_seconds=(tasks.WIN / tasks.SR, None),
                                        threads=(0, None)))
    if cfg.layer not in ("last", "weighted") and not cfg.layer.lstrip("-").isdigit():
        raise ValueError(f"--layer must be last, weighted or an integer, got {cfg.layer!r}")


def main(argv=None):
    cfg = Config(**vars(tasks.config_parser(Config, __doc__).parse_args(argv)))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    print(json.dumps(asdict(cfg)), flush=True)
    try:
        check_config(cfg)
        run(cfg)
    except (ValueError, OSError, KeyboardInterrupt) as e:
        sys.exit(tasks.one_line(e))


if __name__ == "__main__":
    main()
