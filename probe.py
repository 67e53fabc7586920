"""Frozen-feature probes: how good is an encoder on speech (SUPERB-like), music (MARBLE-like) and sounds (ESC-like)?

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
domain's teacher (rows tagged --ref_speech / --ref_music in --results), and for the general-audio task (ESC) the
better of the two, as the authors score ESC-50.

Usage:  python probe.py --model logmel --task all
        python probe.py --model out/music_music_s0/student.pt --tag music_student --layer last
"""
import csv
import json
import os
import re
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
    task: str = "all"  # all | speech | music | audio (ESC) | comma-separated names | csv:PATH
    layer: str = "last"  # last (paper, students) | weighted (SUPERB, teachers) | an integer layer index
    tag: str = ""  # name stored under "model" in the results (default: --model)
    splits: str = "train,valid,test"  # train,valid: choose the probes, leave test unread | test: test the chosen
    # the probe
    probe: str = "linear"  # linear (the headline's) | mlp (MARBLE's: one hidden layer of 512 ReLU units)
    seeds: int = 3  # probe seeds (init and minibatch order); mean and std are reported
    steps: int = 400  # optimisation steps per probe (the fixed budget)
    batch: int = 256  # examples (frames for PR) per step
    lr: float = 3e-3  # Adam learning rate
    eval_every: int = 25  # steps between evaluations on valid (the stopping step is chosen among these)
    # files
    results: str = "out/results.jsonl"  # JSON lines appended here
    predictions: str = "out/predictions"  # chosen probes and per-item test predictions, one file per model
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
MLP_HIDDEN = 512  # MARBLE's MLP probe
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
        if not audio or not label:
            raise ValueError(f"{path}:{line}: empty {label_col if audio else 'path'}")
        audio = audio if os.path.isabs(audio) else os.path.join(root, audio)
        if not os.path.isfile(audio):
            raise ValueError(f"{path}:{line}: audio file not found: {audio}")
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
    if spec in ("speech", "music", "audio"):
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


class Clip(NamedTuple):
    frames: bool  # a frame-level task needs its frame features, not only the mean
    where: str  # CSV and line, for error messages
    test_only: bool  # used by no train or valid split


@torch.no_grad()
def extract(model, clips: dict, device: str, max_seconds: float, audio: dict = None) -> dict:
    """clips: path -> Clip -> path -> (pooled (L, C) float32, frames (L, T, C) float16 or None). Clips of equal
    length are batched (no padding, so no mask is needed), and test-only clips never share a batch with the others:
    train and valid features are the same whether or not test is read. `audio` caches decoded files across calls."""
    audio = {} if audio is None else audio
    for path, clip in clips.items():
        if path not in audio:
            try:
                audio[path] = tasks.read_audio(path, max_seconds)
            except ValueError as e:
                raise ValueError(f"{clip.where}: {e}") from None
    groups = {}
    for path, clip in clips.items():
        groups.setdefault((clip.test_only, len(audio[path])), []).append(path)
    feats, done, t0 = {}, 0, time.time()
    for (_, n), paths in sorted(groups.items()):
        per_batch = max(1, 64 * tasks.SR // n)  # about 64 s of audio a batch
        for i in range(0, len(paths), per_batch):
            chunk = paths[i:i + per_batch]
            wav = torch.from_numpy(np.stack([audio[p] for p in chunk])).to(device)  # (B, n)
            hidden = torch.stack([h.float() for h in model(wav)], 1)  # (B, L, T, C)
            pooled = hidden.mean(2).cpu()  # (B, L, C): mean over time
            for j, p in enumerate(chunk):
                feats[p] = (pooled[j], hidden[j].half().cpu() if clips[p].frames else None)
            done += len(chunk)
            if time.time() - t0 > 10 and done % 1000 < len(chunk):
                print(f"  features: {done}/{len(clips)} clips, {time.time() - t0:.0f} s", flush=True)
    return feats


def task_arrays(task: dict, feats: dict, splits=SPLITS) -> dict:
    """split -> (X (N, L, C), y (N,), items per clip (clips,)) with class indices over the task's sorted labels;
    a frame-level task's items are frames, so a clip holds several (the paired bootstrap resamples clips)."""
    classes = sorted({lab for r in task["rows"] for lab in (r.label if task["frame_level"] else [r.label])})
    index = {c: i for i, c in enumerate(classes)}
    out = {"classes": classes}
    for s in splits:
        xs, ys, sizes = [], [], []
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
                sizes.append(m)
            else:
                xs.append(pooled[None])
                ys.append(index[r.label])
                sizes.append(1)
        out[s] = (torch.cat(xs), torch.tensor(ys), torch.tensor(sizes))
    return out


# ----------------------------------------------------------------------------------------------------------------
# The probe: for each seed and L2 strength a probe, all trained side by side; chosen on valid; test read once

def layer_view(X: torch.Tensor, layer: str) -> torch.Tensor:
    """(N, L, C) -> the layers the probe sees: all of them for weighted, else one, (N, 1, C)."""
    if layer == "weighted":
        return X
    i = X.shape[1] - 1 if layer == "last" else int(layer) % X.shape[1]  # run() has checked the range
    return X[:, i:i + 1]


def init_probes(kind: str, shape: tuple, gens: list) -> list:
    """Parameters of S x G probes (seed s drawn from gens[s]): softmax layer weights w (S, G, L), then linear: W
    (S, G, C, K), b; mlp (MARBLE's probe): W1 (S, G, C, 512), b1, W2 (S, G, 512, K), b2."""
    S, G, L, C, K = shape
    w = torch.zeros(S, G, L)
    if kind == "linear":
        return [w, torch.stack([torch.randn(G, C, K, generator=g) * 0.01 for g in gens]), torch.zeros(S, G, K)]
    W1 = torch.stack([torch.randn(G, C, MLP_HIDDEN, generator=g) * (2 / C) ** 0.5 for g in gens])  # He init for ReLU
    W2 = torch.stack([torch.randn(G, MLP_HIDDEN, K, generator=g) * 0.01 for g in gens])
    return [w, W1, torch.zeros(S, G, MLP_HIDDEN), W2, torch.zeros(S, G, K)]


def probe_logits(X: torch.Tensor, params: list) -> torch.Tensor:
    """X (S, N, L, C) -> logits (S, G, N, K) of every probe: the softmax-weighted sum of the layers, then one
    linear layer, or Linear-ReLU-Linear for the MLP."""
    w, W, b, *more = params
    S, G, C, K = W.shape
    if X.shape[2] == 1:  # one layer, nothing to mix: the G probes of a seed share their input, one matmul for all
        h = torch.bmm(X[:, :, 0], W.permute(0, 2, 1, 3).reshape(S, C, G * K)).view(S, -1, G, K).transpose(1, 2)
    else:
        h = torch.matmul(torch.einsum("snlc,sgl->sgnc", X, torch.softmax(w, -1)), W)  # mixed (S, G, N, C) @ W
    h = h + b[:, :, None]  # (S, G, N, K), K the hidden width for the MLP
    if more:
        h = torch.matmul(torch.relu(h), more[0]) + more[1][:, :, None]
    return h  # (S, G, N, K)


def predict(X: torch.Tensor, params: list, chunk: int = 2048) -> torch.Tensor:
    """Class predictions of every probe, X shared by the seeds: (N, L, C) -> (S, G, N)."""
    S = params[0].shape[0]
    return torch.cat([probe_logits(X[i:i + chunk].expand(S, -1, -1, -1), params).argmax(-1)
                      for i in range(0, len(X), chunk)], -1)


def fit_probes(data: dict, layer: str, seeds: list, kind: str, cfg: Config) -> list:
    """Train a probe per (seed, L2 strength) with Adam for cfg.steps, side by side; keep, per probe, the parameters
    of its best valid evaluation; per seed, choose the probe with the best valid accuracy. Test is not touched.
    -> per seed dict(valid, l2, step, layer_weights, mean, std, params)."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    X = {s: layer_view(data[s][0], layer) for s in ("train", "valid")}
    y = {s: data[s][1] for s in ("train", "valid")}
    mean = X["train"].mean(0)  # (L, C), train statistics only; two passes, as torch's own std is 2x slower
    std = ((X["train"] - mean) ** 2).sum(0).div(max(1, len(X["train"]) - 1)).sqrt() + 1e-5
    X = {s: (x - mean) / std for s, x in X.items()}
    (N, L, C), S, G, K = X["train"].shape, len(seeds), len(L2_GRID), len(data["classes"])
    params = [p.requires_grad_() for p in init_probes(kind, (S, G, L, C, K), gens)]
    l2 = torch.tensor(L2_GRID)[None]  # (1, G)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    best_acc, best_step = torch.full((S, G), -1.0), torch.zeros(S, G, dtype=torch.long)
    best = [p.detach().clone() for p in params]
    for step in range(1, cfg.steps + 1):
        idx = torch.stack([torch.randint(0, N, (min(cfg.batch, N),), generator=g) for g in gens])  # (S, B)
        logits = probe_logits(X["train"][idx], params)  # (S, G, B, K)
        targets = y["train"][idx][:, None].expand(-1, G, -1)  # (S, G, B)
        # classes in the middle (S * G, K, B): the softmax then runs along B in the kernel's fast layout (4x faster)
        loss = F.cross_entropy(logits.flatten(0, 1).transpose(1, 2), targets.flatten(0, 1),
                               reduction="sum") / idx.shape[1]
        loss = loss + sum((l2 * p.pow(2).sum((-2, -1))).sum() for p in params[1::2])  # the weight matrices
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            with torch.no_grad():
                acc = (predict(X["valid"], params) == y["valid"]).float().mean(-1)  # (S, G)
                better = acc > best_acc
                best_acc, best_step = torch.where(better, acc, best_acc), torch.where(better, step, best_step)
                for kept, p in zip(best, params):
                    kept[better] = p[better]
    out = []
    for i in range(S):
        g = int(best_acc[i].argmax())  # the first of the best on valid; test has not been looked at
        chosen = [p[i:i + 1, g:g + 1].clone() for p in best]
        out.append(dict(valid=float(best_acc[i, g]), l2=L2_GRID[g], step=int(best_step[i, g]), mean=mean, std=std,
                        params=chosen, layer_weights=torch.softmax(chosen[0][0, 0], -1).tolist() if layer == "weighted"
                        else None))
    return out


def test_predictions(X: torch.Tensor, layer: str, probe: dict) -> torch.Tensor:
    """The chosen probe's class for every test item, read once: (N, L, C) -> (N,)."""
    return predict((layer_view(X, layer) - probe["mean"]) / probe["std"], probe["params"])[0, 0]


# ----------------------------------------------------------------------------------------------------------------
# Results, per-item predictions and the overall score

def read_results(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def mean_scores(rows: list, model: str, layer: str = None, split: str = "test", probe: str = "linear") -> dict:
    """task -> mean accuracy on `split` over probe seeds for `model` with `probe` (layer-filtered unless None); rows
    whose `split` was not read are skipped. If a model was probed more than once, the latest row of each (task,
    layer, seed) counts."""
    latest = {(r["task"], r["layer"], r["seed"]): r[split] for r in rows  # a later row replaces an earlier one
              if r["model"] == model and (layer is None or r["layer"] == layer) and r.get("probe", "linear") == probe}
    by_task = {}
    for (task, _, _), v in latest.items():
        if v is not None:
            by_task.setdefault(task, []).append(v)
    return {t: float(np.mean(v)) for t, v in by_task.items()}


def predictions_path(folder: str, tag: str, layer: str, probe: str) -> str:
    """Where one model's chosen probes and per-item test predictions live: folder/<tag>.<layer>.<probe>.pt."""
    return os.path.join(folder, re.sub(r"[^\w.-]", "_", f"{tag}.{layer}.{probe}") + ".pt")


def read_predictions(folder: str, tag: str, layer: str, probe: str = "linear") -> dict:
    """task -> dict(classes, test_labels, test_sizes (items per clip), seeds: {seed: chosen probe and test_pred})."""
    path = predictions_path(folder, tag, layer, probe)
    return torch.load(path, weights_only=True) if os.path.exists(path) else {}


def overall_score(scores: dict, base: dict, ref: dict) -> float:
    """SUPERB @ SLT 2022: 1000/n * sum_t (s_t - base_t) / (ref_t - base_t) over the tasks in `scores`."""
    assert scores, "no task to score"
    return 1000.0 / len(scores) * sum((scores[t] - base[t]) / (ref[t] - base[t]) for t in scores)


def score_lines(rows: list, model: str, layer: str, cfg: Config) -> list:
    """Overall, speech and music scores of `model` against logmel and the domain teachers, as printable lines."""
    mine, base = mean_scores(rows, model, layer, probe=cfg.probe), mean_scores(rows, "logmel", probe=cfg.probe)
    refs = {d: mean_scores(rows, getattr(cfg, f"ref_{d}"), "weighted", probe=cfg.probe)  # teachers' protocol
            or mean_scores(rows, getattr(cfg, f"ref_{d}"), layer, probe=cfg.probe) for d in ("speech", "music")}
    refs["audio"] = {t: max(refs["speech"][t], refs["music"][t]) for t in refs["speech"] if t in refs["music"]}
    domain = {t: tasks.PROBE_TASKS.get(t, ("external",))[0] for t in mine}
    note = [t for t in mine if t not in refs.get(domain[t], {})]  # no reference rows yet: s_ref = 1.0
    ref = {t: 1.0 if t in note else refs[domain[t]][t] for t in mine}
    # a reference at or below the baseline would flip the sign of a task's term: such tasks are left out, and said
    skipped = [t for t in mine if t in base and ref[t] <= base[t] + 0.005]
    usable = {t: s for t, s in mine.items() if t in base and t not in skipped}
    if not usable:
        return ["overall score: needs logmel rows for these tasks (python probe.py --model logmel --task all)"]
    parts = {n: {t: s for t, s in usable.items() if n in ("overall", domain[t])}
             for n in ("speech", "music", "overall")}
    lines = [f"{n} score: {overall_score(p, base, ref):.1f} over {len(p)} tasks" for n, p in parts.items() if p]
    if note:
        lines.append(f"(s_ref = 1.0 for {', '.join(note)}: no rows tagged {cfg.ref_speech}/{cfg.ref_music} yet)")
    if skipped:
        lines.append(f"(left out of the score, reference not above logmel: {', '.join(skipped)})")
    return lines


def run(cfg: Config, audio: dict = None) -> None:
    """Extract the features the splits need once, then per task: choose the probes on train and valid (stored with
    the predictions), or take the stored ones; read test once if asked; append one row per seed; print the table."""
    tag, names, splits = cfg.tag or cfg.model, task_list(cfg.task), cfg.splits.split(",")
    if any(not n.startswith("csv:") for n in names):
        tasks.ensure_data(cfg.data_dir)  # makes the probe sets on a fresh clone
    task_defs = [load_task(n, cfg.data_dir) for n in names]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(cfg.model, device)
    n_layers = getattr(model, "n_layers", None) or model.cfg.layers + 1
    if cfg.layer not in ("last", "weighted") and not -n_layers <= int(cfg.layer) < n_layers:
        raise ValueError(f"--layer {cfg.layer} out of range: {cfg.model} has layers 0..{n_layers - 1}")
    stored, pred_path = read_predictions(cfg.predictions, tag, cfg.layer, cfg.probe), predictions_path(
        cfg.predictions, tag, cfg.layer, cfg.probe)
    if "train" not in splits and not all(t["name"] in stored for t in task_defs):
        raise ValueError(f"no chosen probes of {tag} in {pred_path}; run with --splits train,valid first")
    clips = {}
    for t in task_defs:
        for r in t["rows"]:
            if r.split in splits:
                old = clips.get(r.path, Clip(False, "", True))
                clips[r.path] = Clip(old.frames or t["frame_level"], f"{t['csv']}:{r.line}",
                                     old.test_only and r.split == "test")
    t0 = time.time()
    feats = extract(model, clips, device, cfg.max_seconds, audio)
    print(f"features of {len(clips)} clips in {time.time() - t0:.1f} s", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(cfg.results)), exist_ok=True)
    table = [f"| task | domain | classes | chance | valid | test ({tag}, layer {cfg.layer}, {cfg.probe}, {cfg.seeds} "
             "seeds) |", "|---|---|---|---|---|---|"]
    for t in task_defs:
        data = task_arrays(t, feats, [s for s in SPLITS if s in splits])
        if "train" in splits:
            chosen = fit_probes(data, cfg.layer, list(range(cfg.seeds)), cfg.probe, cfg)
            stored[t["name"]] = dict(classes=data["classes"], seeds=dict(enumerate(chosen)))
        entry = stored[t["name"]]
        if "test" in splits:
            entry.update(test_labels=data["test"][1].short(), test_sizes=data["test"][2].int())
        rows = []
        for seed, probe in entry["seeds"].items():
            if "test" in splits:
                probe["test_pred"] = test_predictions(data["test"][0], cfg.layer, probe).short()
            test = float((probe["test_pred"] == entry["test_labels"]).float().mean()) if "test" in splits else None
            rows.append(dict(model=tag, task=t["name"], layer=cfg.layer, probe=cfg.probe, seed=seed, metric="acc",
                             valid=probe["valid"], test=test, n_test=len(entry["test_labels"]) if test is not None
                             else None, classes=len(entry["classes"]), l2=probe["l2"], step=probe["step"],
                             layer_weights=probe["layer_weights"], time=time.strftime("%Y-%m-%d %H:%M:%S")))
        with open(cfg.results, "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        v = np.array([r["valid"] for r in rows])
        te = np.array([r["test"] for r in rows]) if "test" in splits else None
        test_cell = f"{te.mean():.3f} ± {te.std():.3f}" if te is not None else "not read"
        table.append(f"| {t['name']} | {t['domain']} | {len(entry['classes'])} | {1 / len(entry['classes']):.3f} | "
                     f"{v.mean():.3f} ± {v.std():.3f} | {test_cell} |")
        print(f"  {t['name']}: valid {v.mean():.3f}, test {test_cell}", flush=True)
    tiny_distill.save_checkpoint(pred_path, **stored)
    print("\n".join(table))
    if "test" in splits:
        for line in score_lines(read_results(cfg.results), tag, cfg.layer, cfg):
            print(line)


# ================================================================================================================
# Part 2: plumbing (skip on first read): the command line

def check_config(cfg: Config) -> None:
    tasks.check_config(cfg, ranges=dict(seeds=(1, None), steps=(1, None), batch=(1, None), lr=(0, None),
                                        eval_every=(1, None), max_seconds=(tasks.WIN / tasks.SR, None),
                                        threads=(0, None)),
                       choices=dict(probe=("linear", "mlp"), splits=("train,valid,test", "train,valid", "test")))
    if cfg.layer not in ("last", "weighted") and not cfg.layer.lstrip("-").isdigit():
        raise ValueError(f"--layer must be last, weighted or an integer, got {cfg.layer!r}")


def main(argv=None):
    cfg = Config(**vars(tasks.config_parser(Config, __doc__).parse_args(argv)))
    tasks.keep_freed_memory()
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
