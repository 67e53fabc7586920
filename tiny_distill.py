"""Teachers, theta0 and DistilHuBERT-style distillation of a 2-layer student: the first half of the paper's method.

  1. teachers: a speech teacher (HuBERT-like: masked prediction of k-means units of MFCCs) and a music teacher
     (MERT-like: a wider front end fitted to a CQT-like spectrum, the same units, music audio), tiny, pretrained
     here on the synthetic pools when data/teachers/{speech,music}.pt are missing;
  2. theta0: the student (2 layers) copied from the SPEECH teacher's conv front end and lower layers, written once
     to out/theta0.pt with a fingerprint; both students start from it, which is what makes their task vectors add;
  3. distillation from one teacher (--domain speech|music: a student, hence a task vector) or both at once
     (--domain both: the ensemble baseline): heads regress teacher layers at 1/3, 2/3, 3/3 of its depth.

One Encoder class with HuBERT Base's architecture serves as teacher, student and (with real weights) HuBERT, MERT or
DistilHuBERT themselves. Part 1 is the method; Part 2 (after the banner) the plumbing.

Usage:  python tiny_distill.py --domain music          # data, theta0 (and teachers) made if missing
        python tiny_distill.py --domain speech --seed 1
        python tiny_distill.py --domain both           # ensemble distillation
        python tiny_distill.py --pretrain speech       # rebuild a teacher (about 20 minutes on 2 cores)
        python tiny_distill.py --bench                 # step times, FLOP/s, ratio to transformers' HubertModel
        torchrun --nproc_per_node 2 tiny_distill.py --domain music  # DDP
        python tiny_distill.py --preset paper --teacher_speech hubert_base_ls960.pt \\
            --teacher_music MERT-v0-public/ --speech_dir LibriSpeech/ --init out/theta0_paper.pt   # real teachers
"""
import collections
import hashlib
import json
import math
import os
import pickle
import re
import sys
import time
import types
import warnings
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import soundfile as sf
import torch
import torch.nn as nn
import torch.nn.functional as F

import tasks


@dataclass
class Config:
    # what to distil
    domain: str = "music"  # teacher(s) to distil from: speech | music | both (the ensemble baseline)
    data: str = ""  # distillation audio: speech | music | mix; empty = the domain's own pool (mix for both)
    seed: int = 0  # crop order of the run; theta0 and the heads' init do not depend on it
    # the student's recipe (DistilHuBERT)
    steps: int = 500  # distillation steps (DEVIATION: hundreds, not the paper's 200k)
    batch: int = 8  # crops per step
    crop_s: float = 2.0  # crop length, seconds
    lr: float = 5e-4  # peak AdamW learning rate
    warmup_frac: float = 0.07  # linear warmup over this fraction of the steps, then linear decay to 0
    conv_grad_mult: float = 0.1  # gradient scale of the student's conv front end (DistilHuBERT's feature_grad_mult)
    # files
    out_dir: str = ""  # run folder; empty = out/<domain>_<data>_s<seed>
    data_dir: str = "data"  # corpora (made by tasks.py if missing)
    speech_dir: str = ""  # speech audio to distil on, any folder tree of audio files; empty = data_dir/pool_speech
    music_dir: str = ""  # music audio to distil on, any folder tree of audio files; empty = data_dir/pool_music
    teacher_speech: str = "data/teachers/speech.pt"  # speech teacher: ours, or a HuBERT-family checkpoint
    teacher_music: str = "data/teachers/music.pt"  # music teacher: ours, or a HuBERT-family checkpoint (MERT)
    init: str = "out/theta0.pt"  # theta0, the shared student init (made from the speech teacher if missing)
    # teachers, pretrained when a default teacher file is missing or with --pretrain
    pretrain: str = ""  # speech | music: (re)train that teacher into --teacher_<domain> and stop
    teacher_steps: int = 2000  # speech teacher's masked-prediction steps, split evenly over its iterations
    music_teacher_steps: int = 2600  # music teacher's masked-prediction steps (as many as its 20-minute build holds)
    front_end_steps_speech: int = 1400  # speech teacher's stage 0 steps (0: random, frozen); as many as its build holds
    front_end_steps_music: int = 800  # music teacher's stage 0 steps (0: random, frozen)
    front_end_data_music: str = "music"  # music teacher's stage-0 audio: music | mix (half speech, half music)
    music_units: str = "mfcc"  # what the music teacher's k-means units cluster: mfcc | mfcc_chroma (MERT-v0-like)
    speech_iterations: int = 1  # HuBERT-style unit iterations of the speech teacher (2: then units of layer 3)
    recon_weight: float = 0.0  # music teacher: weight of MERT's masked CQT-like spectrum regression (0: off)
    chroma_units_weight: float = 0.25  # speech teacher: weight of a second head predicting 50 chroma units (0: none)
    chroma_units_layer: int = 4  # the layer that head reads (0: the top); 4: two above theta0's top, layer 2
    teacher_lr_speech: float = 5e-4  # speech teacher's peak learning rate
    teacher_lr_music: float = 5e-4  # music teacher's peak learning rate (3e-4 suited MERT's targets, not MFCC units)
    # sizes (DEVIATION: tiny, where HuBERT Base and MERT are 12 x 768 with C = 512)
    teacher_layers: int = 6  # teacher depth (the student has 2: a third, as 4 of 12 for the paper's first target)
    dim: int = 192  # teacher and student width D
    conv_channels: int = 128  # front end channels C of the speech teacher, theta0, students (C / D = 2/3: HuBERT's)
    music_conv_channels: int = 128  # the music teacher's C (never in theta0; 0: conv_channels); pitch needs width
    # what to run
    init_only: bool = False  # write theta0 and stop
    resume: bool = False  # continue from out_dir/checkpoint.pt
    bench: bool = False  # time this config's student step and teacher forward (and transformers') and stop
    preset: str = ""  # paper: the paper's student recipe for a GPU and real teachers (PRESETS); flags still win
    # machine
    bf16: str = "auto"  # bfloat16 autocast: auto (CUDA only; CPU runs stay fp32, same digits everywhere) | on | off
    threads: int = 0  # torch threads (0 = torch's default)
    compile: bool = False  # torch.compile the student and heads (GPU; compiling costs minutes on a CPU)
    cache_targets: bool = False  # distil from a fixed crop bank whose teacher targets are cached on disk (data/cache/)
    cache_crops: int = 0  # crops in that bank (0 = steps x batch)
    log_every: int = 50  # steps between log lines
    ckpt_every: int = 250  # steps between checkpoints


# DistilHuBERT's recipe as the paper's students used it, for a GPU and real teachers (HuBERT Base sizes).
PRESETS = {"paper": dict(steps=200_000, batch=24, crop_s=15.6, lr=2e-4, warmup_frac=0.07, conv_grad_mult=0.1,
                         teacher_layers=12, dim=768, conv_channels=512, log_every=500, ckpt_every=5000)}


# ----------------------------------------------------------------------------------------------------------------
# The encoder, bottom-up: HuBERT Base's architecture, every size from EncoderConfig

@dataclass
class EncoderConfig:
    conv_channels: int = 512  # C, conv front end channels
    dim: int = 768  # D, transformer width
    layers: int = 12  # transformer layers
    heads: int = 12  # attention heads
    ffn: int = 3072  # feed-forward width
    pos_kernel: int = 128  # positional conv kernel (frames)
    pos_groups: int = 16  # positional conv groups
    feature_layernorm: bool = True  # LayerNorm(C) before the projection (HuBERT yes, DistilHuBERT no)


CONV_LAYERS = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2  # (kernel, stride): hop 320, receptive field 400


class ConvFeatureExtractor(nn.Module):
    """wav (B, n) -> (B, T, C), T = tasks.n_frames(n). No conv bias; GroupNorm(C groups) after conv 0 only
    (fairseq's "default" mode)."""

    def __init__(self, C: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(1 if i == 0 else C, C, k, s, bias=False)
                                   for i, (k, s) in enumerate(CONV_LAYERS))
        self.norm = nn.GroupNorm(C, C)
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight)  # fairseq's init; torch's default leaves outputs at ~1e-7

    def forward(self, wav):
        if wav.shape[-1] < tasks.WIN:
            raise ValueError(f"audio of {wav.shape[-1]} samples is shorter than one frame ({tasks.WIN}); pad it")
        x = wav[:, None]  # (B, 1, n)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            x = F.gelu(self.norm(x) if i == 0 else x)
        return x.transpose(1, 2)  # (B, T, C)


class PositionalConv(nn.Module):
    """Weight-normed grouped conv over time, 'same' padding (drop the last frame for an even kernel), GELU.
    weight = g * v / ||v||, the norm over every dim but the kernel position (weight_norm dim=2, as fairseq)."""

    def __init__(self, D: int, kernel: int, groups: int):
        super().__init__()
        self.kernel, self.groups = kernel, groups
        v = torch.randn(D, D // groups, kernel) * math.sqrt(4.0 / (kernel * D))  # fairseq's init, dropout 0
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.norm(dim=(0, 1), keepdim=True))  # (1, 1, kernel)
        self.bias = nn.Parameter(torch.zeros(D))

    def forward(self, x):  # (B, T, D) -> (B, T, D)
        w = self.weight_g * self.weight_v / self.weight_v.norm(dim=(0, 1), keepdim=True)
        with torch.autocast(x.device.type, enabled=False):  # fp32: torch 2.13's CPU bf16 grouped conv is wrong
            y = grouped_conv_fft(x.float().transpose(1, 2), w.float(), self.groups) + self.bias.float()[:, None]
        return F.gelu(y).transpose(1, 2).to(x.dtype)


def grouped_conv_fft(x, w, groups: int):
    """F.conv1d(x, w, padding=K // 2, groups=groups) without its extra last frame for an even K (fairseq's SamePad),
    computed as a product of spectra (the convolution theorem): on a CPU a grouped conv with a 64-128-frame kernel
    is 2-5x faster so, and equal to the direct conv within float error (tested). x (B, D, T), w (D, D / G, K)."""
    B, D, T = x.shape
    K, n = w.shape[-1], 1 << (T + w.shape[-1] - 1).bit_length()  # room for the whole linear convolution
    X = torch.fft.rfft(x, n).view(B, groups, D // groups, -1)  # (B, G, C_in, F)
    W = torch.fft.rfft(w.flip(-1), n).view(groups, D // groups, D // groups, -1)  # (G, C_out, C_in, F)
    y = torch.fft.irfft(torch.einsum("gocf,bgcf->bgof", W, X).reshape(B, D, -1), n)
    return y[:, :, K // 2 - 1:K // 2 - 1 + T]  # (B, D, T)


class SelfAttention(nn.Module):
    def __init__(self, D: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(D, D) for _ in range(4))

    def forward(self, x):  # (B, T, D) -> (B, T, D)
        B, T, D = x.shape
        q, k, v = (p(x).view(B, T, self.heads, D // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, D / H), fused where available
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D))


class EncoderLayer(nn.Module):
    """Post-LN (layer_norm_first=False): x = LN(x + MHA(x)); x = LN(x + FFN(x))."""

    def __init__(self, D: int, heads: int, ffn: int):
        super().__init__()
        self.attention = SelfAttention(D, heads)
        self.attention_norm = nn.LayerNorm(D)
        self.fc1, self.fc2 = nn.Linear(D, ffn), nn.Linear(ffn, D)
        self.final_norm = nn.LayerNorm(D)

    def forward(self, x):
        x = self.attention_norm(x + self.attention(x))
        return self.final_norm(x + self.fc2(F.gelu(self.fc1(x))))


class Encoder(nn.Module):
    """wav (B, n) -> layers + 1 hidden states, each (B, T, D): hidden[0] is the input to layer 1 (after the
    positional conv), hidden[i] the output of layer i."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.conv = ConvFeatureExtractor(cfg.conv_channels)
        self.feature_norm = nn.LayerNorm(cfg.conv_channels) if cfg.feature_layernorm else None
        self.proj = nn.Linear(cfg.conv_channels, cfg.dim)
        self.mask_emb = nn.Parameter(torch.rand(cfg.dim))  # HuBERT's learned embedding of masked frames
        self.pos_conv = PositionalConv(cfg.dim, cfg.pos_kernel, cfg.pos_groups)
        self.norm = nn.LayerNorm(cfg.dim)
        self.layers = nn.ModuleList(EncoderLayer(cfg.dim, cfg.heads, cfg.ffn) for _ in range(cfg.layers))
        for m in self.modules():  # BERT init for linear maps (fairseq init_bert_params)
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, wav, mask=None, conv_grad_mult: float = 1.0):
        """mask: (B, T) bool, frames replaced by mask_emb (teacher pretraining). conv_grad_mult scales the conv
        front end's gradient without changing its output (DistilHuBERT's feature_grad_mult)."""
        x = self.conv(wav)  # (B, T, C)
        if conv_grad_mult != 1.0:
            x = x * conv_grad_mult + x.detach() * (1 - conv_grad_mult)
        if self.feature_norm is not None:
            x = self.feature_norm(x)
        x = self.proj(x)  # (B, T, D)
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_emb.to(x.dtype), x)
        x = self.norm(x + self.pos_conv(x))
        hidden = [x]
        for layer in self.layers:
            x = layer(x)
            hidden.append(x)
        return hidden


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------------------------------------
# Teachers: tiny HuBERT (speech) and MERT (music), pretrained on the synthetic pools in three steps:
# 1) fit the conv front end to the domain's spectrum, 2) cluster k-means units, 3) predict them on masked frames

@dataclass
class TeacherRecipe:
    """What tells the speech teacher (HuBERT-like) from the music teacher (MERT-like); everything else is shared."""
    seed: int  # its init and data draws
    conv_channels: int  # C of its conv front end (the music teacher's never enters theta0)
    steps: int  # masked-prediction steps, split evenly over the iterations
    peak_lr: float
    iterations: int  # HuBERT-style unit iterations (the second clusters the middle layer)
    spectrum: str  # what stage 0 regresses, for the log
    front_end_target: Callable  # wav (B, n) -> (B, T, bins): what stage 0 regresses, compressed
    units: str  # what iteration 1 clusters, for the log
    unit_features: Callable  # wav (B, n) -> (B, T, d) features whose k-means clusters are the targets
    recon_bins: int  # > 0: also regress the CQT-like spectrum of masked frames (MERT's musical teacher)
    front_end_steps: int  # stage 0's steps
    front_end_data: str  # the pool stage 0 reads: the domain's own, or mix
    chroma_units_weight: float  # > 0: a second codebook, 50 k-means units of chroma, predicted by a second head
    chroma_units_layer: int  # the layer that head reads (0: the top)


def mel_and_periodicity_target(wav):
    """Mel bands (the envelope speech needs) next to each frame's periodicity (its autocorrelation at the semitones'
    periods: the pitch music needs), both readable from the 25 ms a front-end frame sees. (B, T, 80 + 61)."""
    return torch.cat([tasks.mel_power(wav) ** (1 / 3), tasks.periodicity(wav)], -1)


def mel_and_semitone_target(wav):
    """Mel bands (timbre, the whole band) next to the 1/3-semitone spectrum of a 128 ms window (pitch, 41 Hz - 2.6
    kHz), whose fine low-frequency resolution asks the front end to find each note's period. (B, T, 80 + 216)."""
    return torch.cat([tasks.mel_power(wav), tasks.semitone_spectrum(wav).exp()], -1) ** (1 / 3)


def log_chroma(wav):
    """Each frame's pitch-class profile, normalised and log-compressed. (B, T, 12)."""
    chroma = tasks.chroma(wav)
    return torch.log(chroma / chroma.sum(-1, keepdim=True) + 1e-3)


def mfcc_and_chroma(wav):
    """MERT-v0's units cluster log-mel + chroma; MFCCs stand in for log-mel here (--music_units mfcc_chroma).
    (B, T, 39 + 12)."""
    return torch.cat([tasks.mfcc(wav), log_chroma(wav)], -1)


def teacher_recipe(cfg: Config, domain: str) -> TeacherRecipe:
    if domain == "speech":  # HuBERT: units of MFCCs (iteration 1)
        # DEVIATION: HuBERT predicts one codebook; ours also predicts 50 chroma units from layer 4 at weight 0.25, so
        # the layers theta0 copies keep pitch (without it theta0 probes Pitch below log-mel). --chroma_units_weight 0
        # gives HuBERT's single target.
        return TeacherRecipe(1000, cfg.conv_channels, cfg.teacher_steps, cfg.teacher_lr_speech, cfg.speech_iterations,
                             "mel + periodicity", mel_and_periodicity_target, "MFCC", tasks.mfcc, 0,
                             cfg.front_end_steps_speech, "speech", cfg.chroma_units_weight, cfg.chroma_units_layer)
    # DEVIATION: MERT-v0 clusters log-mel + chroma and regresses the CQT of masked frames; ours hears pitch through
    # its front end (stage 0 fits a semitone spectrum) and predicts MFCC units: the pitch targets wore the layers'
    # timbre away (README, Teachers). --music_units mfcc_chroma --recon_weight 1 restore MERT's targets.
    units = ("MFCC", tasks.mfcc) if cfg.music_units == "mfcc" else ("MFCC + chroma", mfcc_and_chroma)
    return TeacherRecipe(1001, cfg.music_conv_channels or cfg.conv_channels, cfg.music_teacher_steps,  # MERT
                         cfg.teacher_lr_music, 1, "mel + CQT-like semitone", mel_and_semitone_target, *units, 216,
                         cfg.front_end_steps_music, cfg.front_end_data_music, 0.0, 0)


def teacher_config(cfg: Config, recipe: TeacherRecipe) -> EncoderConfig:
    if cfg.preset == "paper":
        return EncoderConfig()  # HuBERT Base's sizes
    # DEVIATION: tiny teachers (6 layers x 192) stand in for HuBERT Base and MERT-v0-public (12 x 768)
    return EncoderConfig(conv_channels=recipe.conv_channels, dim=cfg.dim, layers=cfg.teacher_layers,
                         heads=max(1, cfg.dim // 48), ffn=4 * cfg.dim, pos_kernel=64, pos_groups=cfg.dim // 16)


def fit_front_end(enc: Encoder, pools: dict, domain: str, recipe: TeacherRecipe, cfg: Config, g: torch.Generator,
                  steps: int, device: str) -> float:
    """Stage 0: train the conv front end and a linear read-out to regress each frame's target (the recipe's
    spectrum, standardised over the pool, not per clip, so the clip's spectral envelope stays in the target).
    Returns the explained variance of the last batch.
    DEVIATION: HuBERT trains its front end end to end; at our scale one trained on units collapsed, and a frozen
    random one keeps little of what log-mel keeps. A regression target cannot be met by discarding the spectrum."""
    data = recipe.front_end_data
    print(f"teacher {domain} stage 0: fitting the conv front end to {recipe.spectrum} spectra of {data} audio "
          f"({steps} steps)", flush=True)
    crop_n, spectrum = int(cfg.crop_s * tasks.SR), recipe.front_end_target
    with torch.no_grad():
        ref = spectrum(read_crops(pools, draw_crops(pools, data, 32, crop_n, g), crop_n)).flatten(0, 1)
        mean, std = ref.mean(0), ref.std(0) + 1e-5
    readout = nn.Linear(enc.cfg.conv_channels, len(mean)).to(device)
    params = list(enc.conv.parameters()) + list(readout.parameters())
    peak_lr = 3e-3
    opt = torch.optim.AdamW(params, lr=peak_lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
    t0 = time.time()
    for step in range(1, steps + 1):
        wav = read_crops(pools, draw_crops(pools, data, cfg.batch * 2, crop_n, g), crop_n)  # (B, n)
        with torch.no_grad():
            target = ((spectrum(wav) - mean) / std).to(device)  # (B, T, bins)
        err = ((readout(enc.conv(wav.to(device))) - target) ** 2).mean()
        optimizer_step(opt, params, err, lr_at(step, steps, peak_lr, 0.05))
        if step % cfg.log_every == 0 or step == steps:
            el = time.time() - t0
            print(f"front end step {step}/{steps} {data} spectrum explained variance {1 - err.item():.3f} "
                  f"{el / step * 1000:.0f} ms/step ETA {el / step * (steps - step) / 60:.1f} min", flush=True)
    return 1 - err.item()


def kmeans(x: torch.Tensor, k: int, iters: int, g: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means on standardised rows, k-means++ seeding. x (N, d) -> centroids (k, d)."""
    centroids = x[torch.randint(len(x), (1,), generator=g)]
    for _ in range(1, k):  # k-means++: next seed with probability proportional to squared distance
        d = torch.cdist(x, centroids).min(1).values ** 2
        centroids = torch.cat([centroids, x[torch.multinomial(d / d.sum(), 1, generator=g)]])
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(1)
        for j in range(k):
            members = x[assign == j]
            if len(members):
                centroids[j] = members.mean(0)
    return centroids


def span_mask(B: int, T: int, g: torch.Generator, start_prob: float = 0.08, span: int = 10) -> torch.Tensor:
    """HuBERT masking (mask_prob 0.8 / span 10): each frame starts a masked span of `span` frames with probability
    start_prob; about half the frames end up masked. -> (B, T) bool."""
    starts = (torch.rand(B, T, generator=g) < start_prob).float()
    starts[torch.arange(B), torch.randint(T, (B,), generator=g)] = 1.0  # at least one span per clip
    return F.max_pool1d(F.pad(starts[:, None], (span - 1, 0)), span, 1)[:, 0] > 0


def unit_codebook(features: Callable, pools: dict, domain: str, crop_n: int, k: int, g: torch.Generator) -> tuple:
    """k-means units of features (wav -> (B, T, d)) over 16 x 16 crops of the pool -> (mean, std, centroids (k, d))."""
    with torch.no_grad():
        feats = torch.cat([features(read_crops(pools, draw_crops(pools, domain, 16, crop_n, g), crop_n))
                           .flatten(0, 1) for _ in range(16)])
    mean, std = feats.mean(0), feats.std(0) + 1e-5
    return mean, std, kmeans((feats - mean) / std, k, iters=20, g=g)


def nearest_unit(feats: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(B, T, d) features -> (B, T) index of the nearest centroid, in the codebook's standardised space."""
    return torch.cdist((feats - mean) / std, centroids[None]).argmin(-1)


def masked_ce(logits: torch.Tensor, units: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of unit predictions (B, T, K) against units (B, T): the masked frames' mean, plus the unmasked
    frames' at weight 0.1. m (B, T) is 1.0 on masked frames."""
    ce = F.cross_entropy(logits.transpose(1, 2), units, reduction="none")  # (B, T)
    return (ce * m).sum() / m.sum() + 0.1 * (ce * (1 - m)).sum() / (1 - m).sum().clamp(min=1)


def pretrain_teacher(cfg: Config, domain: str, path: str) -> None:
    """Build the tiny `domain` teacher and write it to `path`: stage 0, then HuBERT-style masked prediction of
    k-means units (speech: HuBERT's iterations, optionally a second head on chroma units; music: one, optionally
    with MERT's masked CQT regression).
    DEVIATIONS (reduced scale): the front end is frozen after stage 0; iteration 2 continues from iteration 1's
    weights instead of starting afresh; a linear unit classifier instead of HuBERT's cosine head; unmasked
    frames' cross-entropy at weight 0.1 next to the masked frames' (it helped the pilots most)."""
    recipe, (device, amp) = teacher_recipe(cfg, domain), device_and_amp(cfg)
    g = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    kinds = ("speech", "music") if recipe.front_end_data == "mix" else (domain,)
    pools, crop_n, n_units = {k: load_pool(cfg, k) for k in kinds}, int(cfg.crop_s * tasks.SR), 100
    enc_cfg = teacher_config(cfg, recipe)
    enc = Encoder(enc_cfg).to(device)
    t_start = time.time()  # the whole build, stage 0 included, goes into the checkpoint's "seconds"
    if recipe.front_end_steps:  # 1) the front end, then frozen (trained on units, it collapsed in every pilot)
        fit_front_end(enc, pools, domain, recipe, cfg, g, recipe.front_end_steps, device)
    enc.conv.requires_grad_(False)
    recon_head, steps = None, recipe.steps // recipe.iterations
    print(f"teacher {domain}: {count_parameters(enc) / 1e6:.2f}M parameters, {recipe.iterations} x {steps} steps of "
          f"{cfg.batch * 2} x {cfg.crop_s} s", flush=True)
    t0 = time.time()
    for it in range(recipe.iterations):
        def featurize(wav):  # (B, n) -> (B, T, d): what this iteration's units cluster
            return recipe.unit_features(wav) if it == 0 else enc(wav.to(device))[enc_cfg.layers // 2].float().cpu()
        units_of = recipe.units if it == 0 else f"layer {enc_cfg.layers // 2}"
        print(f"teacher {domain} iteration {it + 1}: k-means ({n_units} units) on {units_of} features of the {domain} "
              f"pool{' and 50 of chroma' if recipe.chroma_units_weight else ''}", flush=True)
        codebook = unit_codebook(featurize, pools, domain, crop_n, n_units, g)  # 2) units
        chroma_codebook, chroma_head = None, None
        if recipe.chroma_units_weight:  # a second codebook (MERT predicts several): pitch class the layers must keep
            chroma_codebook = unit_codebook(log_chroma, pools, domain, crop_n, 50, g)
            chroma_head = nn.Linear(enc_cfg.dim, 50).to(device)
        unit_head = nn.Linear(enc_cfg.dim, n_units).to(device)
        if recipe.recon_bins and recon_head is None:  # built at weight 0 too, so every weight draws the same init
            recon_head = nn.Linear(enc_cfg.dim, recipe.recon_bins).to(device)
        heads = (unit_head, chroma_head, recon_head)
        recon = recon_head is not None and cfg.recon_weight > 0  # at weight 0 the CQT target is not even computed
        params = [p for m in (enc, *heads) if m is not None for p in m.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=recipe.peak_lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
        for step in range(1, steps + 1):  # 3) masked prediction
            wav = read_crops(pools, draw_crops(pools, domain, cfg.batch * 2, crop_n, g), crop_n)  # (B, n)
            with torch.no_grad():
                units = nearest_unit(featurize(wav), *codebook)  # (B, T)
                if chroma_head is not None:
                    chroma_units = nearest_unit(log_chroma(wav), *chroma_codebook)
                target_spec = tasks.semitone_spectrum(wav) if recon else None
            mask = span_mask(*units.shape, g)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
                hidden = enc(wav.to(device), mask.to(device))  # layers + 1 x (B, T, D)
                top = hidden[-1]
                logits = unit_head(top).float()
            m = mask.to(device).float()
            loss = masked_ce(logits, units.to(device), m)
            if chroma_head is not None:
                chroma_in = hidden[recipe.chroma_units_layer or -1]
                chroma_ce = masked_ce(chroma_head(chroma_in).float(), chroma_units.to(device), m)
                loss = loss + recipe.chroma_units_weight * chroma_ce
            if recon:  # MERT's musical teacher: reconstruct the CQT-like spectrum of masked frames
                spec = (target_spec.to(device) - target_spec.mean()) / (target_spec.std() + 1e-5)
                err = ((recon_head(top).float() - spec) ** 2).mean(-1)  # (B, T)
                loss = loss + cfg.recon_weight * (err * m).sum() / m.sum()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"teacher {domain}: loss is {loss.item()} at step {step}; "
                                         f"lower --teacher_lr_{domain}")
            optimizer_step(opt, params, loss, lr_at(step, steps, recipe.peak_lr, 0.08))
            if step % cfg.log_every == 0 or step == steps:
                acc = ((logits.argmax(-1) == units.to(device)).float() * m).sum() / m.sum()
                el, done = time.time() - t0, it * steps + step
                print(f"teacher {domain} iteration {it + 1} step {step}/{steps} loss {loss.item():.3f} masked-unit "
                      f"acc {acc.item():.3f} {el / done * 1000:.0f} ms/step "
                      f"ETA {el / done * (recipe.iterations * steps - done) / 60:.1f} min", flush=True)
    # stored in float16 (half the size; teachers are frozen, and float32 is restored on load)
    state = {k: v.cpu().half() if v.is_floating_point() else v.cpu() for k, v in enc.state_dict().items()}
    save_checkpoint(path, encoder=state, encoder_config=asdict(enc_cfg), domain=domain, steps=recipe.iterations * steps,
                    seconds=round(time.time() - t_start, 1), fingerprint=fingerprint(state), config=asdict(cfg))
    print(f"teacher {domain}: wrote {path} (fingerprint {fingerprint(state)}, {time.time() - t_start:.0f} s)",
          flush=True)


def load_or_pretrain_teacher(cfg: Config, domain: str, device: str) -> Encoder:
    """The frozen teacher at --teacher_<domain>. Pretrained there (about 20 minutes) only when the default path is
    missing: a path typed on the command line that does not exist is a typo until shown otherwise."""
    path = cfg.teacher_speech if domain == "speech" else cfg.teacher_music
    if not os.path.exists(path):
        if path != getattr(Config, f"teacher_{domain}"):
            raise ValueError(f"--teacher_{domain} {path}: no such file or folder; check the path, or make a teacher "
                             f"there with python tiny_distill.py --pretrain {domain} --teacher_{domain} {path}")
        print(f"no {domain} teacher at {path}: pretraining one (python tiny_distill.py --pretrain {domain})",
              flush=True)
        pretrain_teacher(cfg, domain, path)
    return load_encoder(path, device)


# ----------------------------------------------------------------------------------------------------------------
# theta0 (paper: both students start from HuBERT's CNN and first two layers): stored once, with a fingerprint

def student_config(teacher_cfg: EncoderConfig) -> EncoderConfig:
    return EncoderConfig(**{**asdict(teacher_cfg), "layers": 2})


def make_theta0(speech_teacher: Encoder) -> dict:
    """The student backbone copied from the speech teacher: conv front end, LayerNorms, projection, mask embedding,
    positional conv and layers 1-2 (DistilHuBERT's init; the paper inits both students so)."""
    student = Encoder(student_config(speech_teacher.cfg))
    teacher = speech_teacher.state_dict()
    state = {k: teacher[k].clone() for k in student.state_dict()}  # every student key is a teacher key
    load_state(student, state, "theta0", "check the speech teacher")
    return {k: v.cpu() for k, v in student.state_dict().items()}


def load_or_make_theta0(cfg: Config, device: str) -> dict:
    """theta0's checkpoint (encoder, encoder_config, fingerprint, teacher_fingerprint), made from the speech
    teacher when --init is missing. Every student records its fingerprint; merge.py refuses a mismatch."""
    if not os.path.exists(cfg.init):
        teacher = load_or_pretrain_teacher(cfg, "speech", device)
        theta0 = make_theta0(teacher)
        save_checkpoint(cfg.init, encoder=theta0, encoder_config=asdict(student_config(teacher.cfg)),
                        fingerprint=fingerprint(theta0), teacher_fingerprint=teacher.fingerprint)
        print(f"theta0: wrote {cfg.init} (fingerprint {fingerprint(theta0)})", flush=True)
    ckpt = load_checkpoint(cfg.init, "delete it and rerun with --init_only")
    if fingerprint(ckpt["encoder"]) != ckpt["fingerprint"]:
        raise ValueError(f"{cfg.init}: tensors do not match the stored fingerprint; delete it and rerun --init_only")
    return ckpt


# ----------------------------------------------------------------------------------------------------------------
# Heads and loss (DistilHuBERT): predict teacher layers 4, 8, 12 (1/3, 2/3, 3/3 of the depth) from the top layer

class PredictionHeads(nn.Module):
    """One projection to K * D_teacher, GELU, then K separate maps, one per target layer. (B, T, D) -> (B, K, T,
    D_teacher). Not part of the backbone: never in a task vector."""

    def __init__(self, D: int, D_teacher: int, K: int):
        super().__init__()
        self.K, self.D_teacher = K, D_teacher
        self.proj = nn.Linear(D, K * D_teacher)
        self.maps = nn.ModuleList(nn.Linear(D_teacher, D_teacher) for _ in range(K))

    def forward(self, x):
        B, T, _ = x.shape
        h = F.gelu(self.proj(x)).view(B, T, self.K, self.D_teacher)
        return torch.stack([m(h[:, :, i]) for i, m in enumerate(self.maps)], 1)


def target_layers(teacher_layers: int) -> list:
    return [round(teacher_layers * i / 3) for i in (1, 2, 3)]


@torch.no_grad()
def teacher_targets(teachers: dict, layers: dict, wav: torch.Tensor) -> dict:
    """Frozen teachers in float32, one forward pass each: domain -> its target layers (B, K, T, D_teacher)."""
    return {d: torch.stack([hidden[i] for i in layers[d]], 1)
            for d, hidden in ((d, teacher(wav)) for d, teacher in teachers.items())}


def distill_loss(pred: torch.Tensor, target: torch.Tensor):
    """s3prl's distiller loss per head: mean L1 - mean log sigmoid(cos) over frames, averaged over heads.
    pred, target: (B, K, T, D) -> (loss, per-head L1 (K,), per-head cos (K,))."""
    l1 = (pred - target).abs().mean((0, 2, 3))  # (K,)
    cos = F.cosine_similarity(pred, target, dim=-1)  # (B, K, T)
    loss = (l1 - F.logsigmoid(cos).mean((0, 2))).mean()
    return loss, l1.detach(), cos.mean((0, 2)).detach()


# ----------------------------------------------------------------------------------------------------------------
# Distillation: theta0 -> teachers -> heads -> loop

class Distiller(nn.Module):
    """Student backbone + one head set per teacher (the ensemble has two), one module so DDP averages both."""

    def __init__(self, student: Encoder, heads: nn.ModuleDict):
        super().__init__()
        self.student, self.heads = student, heads

    def forward(self, wav, conv_grad_mult: float):
        top = self.student(wav, conv_grad_mult=conv_grad_mult)[-1]  # (B, T, D)
        return {d: h(top) for d, h in self.heads.items()}  # each (B, K, T, Dt)


def lr_at(step: int, total: int, peak: float, warmup_frac: float) -> float:
    """Linear warmup over warmup_frac of the steps, then linear decay to zero (DistilHuBERT's schedule)."""
    warm = max(1, int(warmup_frac * total))
    return peak * step / warm if step < warm else peak * max(0.0, (total - step) / max(1, total - warm))


def distill_step(forward, params: list, opt, wav, targets: dict, lr: float, cfg: Config, amp: bool) -> tuple:
    """One update: the student's predictions, the losses summed over teachers (the ensemble's two with equal
    weights), backward, clip at 5, AdamW. -> (loss, per-teacher head stats, gradient norm). A non-finite loss
    stops before the update."""
    with torch.autocast(wav.device.type, dtype=torch.bfloat16, enabled=amp):
        preds = forward(wav, cfg.conv_grad_mult)
    loss, stats = 0.0, {}
    for d, target in targets.items():
        head_loss, l1, cos = distill_loss(preds[d].float(), target)
        loss = loss + head_loss
        stats[d] = dict(l1=[round(x, 4) for x in l1.tolist()], cos=[round(x, 4) for x in cos.tolist()])
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()}")
    return loss, stats, optimizer_step(opt, params, loss, lr)  # under DDP the gradients arrive averaged over the ranks


def optimizer_step(opt, params: list, loss: torch.Tensor, lr: float) -> torch.Tensor:
    """Every loop's update (stage 0, masked prediction, distillation): set the learning rate, backward, clip the
    gradient norm at 5, step. -> the norm before clipping."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, 5.0)
    opt.step()
    return grad_norm


def train(cfg: Config) -> dict:
    """Distil one student from theta0 and write its run folder (config.json, log.jsonl, checkpoint.pt, student.pt).
    Returns the final metrics. Under torchrun each rank trains on its slice of the same batch."""
    run = Run(cfg)  # checks, DDP, device, data and the run folder
    theta0 = load_or_make_theta0(cfg, run.device)
    teachers = {d: load_or_pretrain_teacher(cfg, d, run.device) for d in run.domains}
    speech_fp = teachers["speech"].fingerprint if "speech" in teachers else read_encoder(cfg.teacher_speech)[2]
    if theta0.get("teacher_fingerprint") != speech_fp:
        raise ValueError(f"{cfg.init} was made from another speech teacher than {cfg.teacher_speech}; "
                         "delete it (or pass --init) and rerun with --init_only")
    torch.manual_seed(1337)  # the heads start the same in every run, like theta0 (the authors' seed)
    student = Encoder(EncoderConfig(**theta0["encoder_config"]))
    load_state(student, theta0["encoder"], cfg.init, "delete it and rerun --init_only")
    heads = nn.ModuleDict({d: PredictionHeads(student.cfg.dim, t.cfg.dim, 3) for d, t in teachers.items()})
    model = Distiller(student, heads).to(run.device).train()
    student.mask_emb.requires_grad_(False)  # pretraining only; never used here (and DDP wants no idle parameter)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=1e-6)
    g = torch.Generator().manual_seed(cfg.seed)
    layers = {d: target_layers(t.cfg.layers) for d, t in teachers.items()}
    batches = Batches(cfg, run, teachers, layers)  # fresh crops and targets each step, or the cached bank's
    start = run.resume(student, heads, opt, g) if cfg.resume else 0
    forward = run.wrap(model)  # DDP and torch.compile where asked
    run.begin(student, layers, theta0["fingerprint"], start, cached=batches.bank is not None)
    for step in range(start + 1, cfg.steps + 1):
        wav, targets = batches.next(g)  # (B, n), {domain: (B, K, T, Dt)}
        try:
            loss, stats, grad_norm = distill_step(forward, params, opt, wav, targets, lr_at(step, cfg.steps, cfg.lr,
                                                  cfg.warmup_frac), cfg, run.amp)
        except FloatingPointError as e:  # stopped before the update: checkpoint.pt holds the last good state
            raise FloatingPointError(f"{e} at step {step}; the last good checkpoint is {run.ckpt_path} (continue "
                                     "with --resume after lowering --lr, or check the data)") from None
        run.log(step, loss, stats, opt.param_groups[0]["lr"], grad_norm)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            run.checkpoint(step, student, heads, opt, g)
    return run.finish(student, teacher_runs=0 if batches.bank else (cfg.steps - start) * len(teachers))


# ================================================================================================================
# Part 2: plumbing (skip on first read): checkpoints, foreign checkpoint formats, audio folders and crops,
# devices, the target cache, DDP and the run folder, --bench, the command line

def fingerprint(state: dict) -> str:
    """A short hash of a state dict's names and values: equal fingerprints mean identical tensors."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if state[k].numel() else b"")
    return h.hexdigest()[:16]


def save_checkpoint(path: str, **parts) -> None:
    """A dict of tensors and numbers, written to a temporary file and renamed: a crash leaves the old one whole."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(parts, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_checkpoint(path: str, rebuild: str) -> dict:
    """One of this project's checkpoints, read with weights_only=True (no code can run)."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint not found: {path}; {rebuild}")
    try:
        with warnings.catch_warnings():  # a crafted file's pickle protocol makes torch warn before it refuses
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint {path} is unreadable ({type(e).__name__}); delete it and {rebuild}") from None


def load_state(module: nn.Module, state: dict, what: str, rebuild: str) -> None:
    """Strict load that names missing and unexpected keys and says how to rebuild."""
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or bad:
        raise ValueError(f"{what} does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                         f"shape mismatch {bad[:5]}; {rebuild}")
    module.load_state_dict(state)


def load_encoder(path: str, device: str = "cpu") -> Encoder:
    """A checkpoint of this project (teacher, theta0, student, merged) or a real HuBERT / MERT / DistilHuBERT file
    or folder (see read_encoder) -> its frozen Encoder in eval mode, with .fingerprint set."""
    enc_cfg, state, fp = read_encoder(path)[:3]
    enc = Encoder(enc_cfg)
    load_state(enc, state, path, "rebuild it with tiny_distill.py, or check that it is a HuBERT-family checkpoint")
    enc.fingerprint = fp
    return enc.to(device).eval().requires_grad_(False)


def random_like(path: str, device: str = "cpu", seed: int = 0) -> Encoder:
    """A freshly initialised encoder of the same size as the checkpoint at `path` (the random-encoder baseline)."""
    enc_cfg = read_encoder(path)[0]
    torch.manual_seed(seed)
    return Encoder(enc_cfg).to(device).eval().requires_grad_(False)


# ---- Real checkpoints: HuBERT Base, MERT-v0-public and DistilHuBERT in the layouts people download, renamed onto
# this Encoder; sizes are inferred from the tensors. tests/test_real.py checks parity with transformers.

NUM, WB = r"(\d+)", r"(weight|bias)"
KEY_MAPS = {  # layout -> [(their name as a full-match regex, ours)], after weight-norm keys became weight_g/weight_v
    "transformers": [  # HubertModel, MERT's music_hubert (pytorch_model.bin / model.safetensors), "hubert." dropped
        (rf"feature_extractor\.conv_layers\.{NUM}\.conv\.weight", r"conv.convs.\1.weight"),
        (rf"feature_extractor\.conv_layers\.0\.layer_norm\.{WB}", r"conv.norm.\1"),
        (rf"feature_projection\.layer_norm\.{WB}", r"feature_norm.\1"),
        (rf"feature_projection\.projection\.{WB}", r"proj.\1"),
        (r"masked_spec_embed", "mask_emb"),
        (r"encoder\.pos_conv_embed\.conv\.(weight_g|weight_v|bias)", r"pos_conv.\1"),
        (rf"encoder\.layer_norm\.{WB}", r"norm.\1"),
        (rf"encoder\.layers\.{NUM}\.attention\.(q|k|v|out)_proj\.{WB}", r"layers.\1.attention.\2_proj.\3"),
        (rf"encoder\.layers\.{NUM}\.layer_norm\.{WB}", r"layers.\1.attention_norm.\2"),
        (rf"encoder\.layers\.{NUM}\.feed_forward\.intermediate_dense\.{WB}", r"layers.\1.fc1.\2"),
        (rf"encoder\.layers\.{NUM}\.feed_forward\.output_dense\.{WB}", r"layers.\1.fc2.\2"),
        (rf"encoder\.layers\.{NUM}\.final_layer_norm\.{WB}", r"layers.\1.final_norm.\2"),
    ],
    "fairseq": [  # hubert_base_ls960.pt ("model") and s3prl's DistilHuBERT ("Distiller", no feature LayerNorm)
        (rf"feature_extractor\.conv_layers\.{NUM}\.0\.weight", r"conv.convs.\1.weight"),
        (rf"feature_extractor\.conv_layers\.0\.2\.{WB}", r"conv.norm.\1"),
        (rf"layer_norm\.{WB}", r"feature_norm.\1"),
        (rf"post_extract_proj\.{WB}", r"proj.\1"),
        (r"mask_emb", "mask_emb"),
        (r"encoder\.pos_conv\.0\.(weight_g|weight_v|bias)", r"pos_conv.\1"),
        (rf"encoder\.layer_norm\.{WB}", r"norm.\1"),
        (rf"encoder\.layers\.{NUM}\.self_attn\.(q|k|v|out)_proj\.{WB}", r"layers.\1.attention.\2_proj.\3"),
        (rf"encoder\.layers\.{NUM}\.self_attn_layer_norm\.{WB}", r"layers.\1.attention_norm.\2"),
        (rf"encoder\.layers\.{NUM}\.(fc1|fc2)\.{WB}", r"layers.\1.\2.\3"),
        (rf"encoder\.layers\.{NUM}\.final_layer_norm\.{WB}", r"layers.\1.final_norm.\2"),
    ],
}
# torchaudio's Wav2Vec2Model (hubert_fairseq_base_ls960.pth; HuBERTPretrainModel's "wav2vec2." dropped) has the
# transformers names, with the projection under encoder. and the transformer under encoder.transformer.
TORCHAUDIO_PREFIXES = [(r"feature_projection\.", r"encoder\.feature_projection\."),
                       (r"encoder\.", r"encoder\.transformer\."),
                       (r"masked_spec_embed", r"mask_generator\.mask_embedding")]
KEY_MAPS["torchaudio"] = [(next((new + p[len(old):] for old, new in TORCHAUDIO_PREFIXES if p.startswith(old)), p), o)
                          for p, o in KEY_MAPS["transformers"]]
# pretraining and fine-tuning heads, in no encoder: HuBERT's final_proj / label_embs_concat, a CTC lm_head,
# s3prl's prediction heads (output_layer, returned apart by read_encoder)
HEAD_KEYS = r"(final_proj\..*|label_embs_concat|lm_head\..*|output_layer\..*)"


class _Opaque(dict):
    """Stands in for every global of a foreign pickle outside torch's tensor rebuilding (fairseq's argparse and
    omegaconf configs, numpy scalars, and anything a crafted file names): it keeps the pickled data and runs none of
    the original's code, so neither fairseq nor omegaconf is needed and nothing in the file can run."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def append(self, x):
        self.setdefault("items", []).append(x)

    def extend(self, xs):
        self.setdefault("items", []).extend(xs)


# The exact (module, name) pairs torch's own tensor rebuilding needs: no prefixes, no dotted names, nothing else
# callable. (torch resolves storage types itself, before asking the unpickler.)
TORCH_REBUILD = {("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
                 ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
                 ("collections", "OrderedDict"): collections.OrderedDict}


class _InertUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with two changes that leave a file no way to run code: every global outside
    TORCH_REBUILD is _Opaque (so REDUCE and NEWOBJ can only call those functions or build inert data), and BUILD
    (setstate) works on _Opaque objects and a state dict's OrderedDict alone. last_inert lists the globals replaced
    in the latest read, for the error message."""
    last_inert: list = []

    def find_class(self, module, name):
        if (module, name) in TORCH_REBUILD:
            return TORCH_REBUILD[(module, name)]
        _InertUnpickler.last_inert.append(f"{module}.{name}")
        return _Opaque

    def load_build(self):
        state, inst = self.stack.pop(), self.stack[-1]
        if type(inst) is _Opaque:
            inst.__setstate__(state)
        elif type(inst) is collections.OrderedDict and type(state) is dict:  # a state dict's _metadata
            inst.__dict__.update({k: v for k, v in state.items() if type(k) is str})
        else:
            raise pickle.UnpicklingError(f"refused to set the state of a {type(inst).__name__}")

    dispatch = {**pickle._Unpickler.dispatch, pickle.BUILD[0]: load_build}


def read_file(path: str):
    """A checkpoint file or a transformers folder -> (what it holds, config.json dict or {}), read once.
    Nothing in the file is executed: torch's weights_only reader first; fairseq and s3prl files, which pickle config
    objects next to the weights, through _InertUnpickler."""
    meta = {}
    if os.path.isdir(path):  # a transformers folder: config.json + model.safetensors or pytorch_model.bin
        if os.path.isfile(os.path.join(path, "config.json")):
            with open(os.path.join(path, "config.json")) as f:
                meta = json.load(f)
        found = [os.path.join(path, n) for n in ("model.safetensors", "pytorch_model.bin")
                 if os.path.isfile(os.path.join(path, n))]
        if not found:
            raise ValueError(f"{path} is a folder without model.safetensors or pytorch_model.bin")
        path = found[0]
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ValueError(f"{path} is a .safetensors file: pip install safetensors, or use pytorch_model.bin") \
                from None
        return load_file(path), meta
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it was not written for; we try again below
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True), meta
    except Exception:
        pass
    inert = types.SimpleNamespace(Unpickler=_InertUnpickler, load=lambda f, **kw: _InertUnpickler(f, **kw).load(),
                                  __name__="pickle")
    _InertUnpickler.last_inert = []
    try:  # weights_only=False is safe only because every global goes through _InertUnpickler.find_class
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=inert), meta
    except Exception as e:
        named = sorted(set(_InertUnpickler.last_inert))
        extra = f"; its pickle names {', '.join(named[:4])}, read as inert data" if named else ""
        raise ValueError(f"{path} is unreadable as a torch checkpoint ({type(e).__name__}: {e}){extra}") from None


def convert_state(theirs: dict, what: str):
    """Their state dict -> (layout, our encoder state, their head tensors). Unknown or unmatched keys are an error
    that lists them; nothing is dropped silently except the heads named in HEAD_KEYS."""
    renamed = {}
    for k, v in theirs.items():
        for prefix in ("module.", "hubert.", "wav2vec2.", "model."):
            k = k[len(prefix):] if k.startswith(prefix) else k
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                               "weight_v")
        renamed[k] = v
    heads = {k: v for k, v in renamed.items() if re.fullmatch(HEAD_KEYS, k)}
    body = {k: v for k, v in renamed.items() if k not in heads}

    def apply(rules):
        out, unknown = {}, []
        for k, v in body.items():
            ours = next((re.sub(p, o, k) for p, o in rules if re.fullmatch(p, k)), None)
            if ours is None:
                unknown.append(k)
            else:
                out[ours] = v.float()
        return out, unknown
    layout = max(KEY_MAPS, key=lambda name: len(apply(KEY_MAPS[name])[0]))
    state, unknown = apply(KEY_MAPS[layout])
    if unknown:
        raise ValueError(f"{what} ({layout} layout): keys this encoder has no place for: {unknown[:8]}"
                         f"{' ...' if len(unknown) > 8 else ''}; is it a HuBERT-family model (group-norm conv, "
                         "post-LN)?")
    return layout, state, heads


def infer_config(state: dict, heads: int = 0) -> EncoderConfig:
    """Sizes from tensor shapes. The head count is in no shape: config.json's when given, else D / 64 (the head
    width of HuBERT Base and Large, DistilHuBERT and MERT)."""
    D, pos = state["proj.weight"].shape[0], state["pos_conv.weight_v"].shape  # pos: (D, D / groups, kernel)
    return EncoderConfig(conv_channels=state["conv.convs.0.weight"].shape[0], dim=D,
                         layers=len({k.split(".")[1] for k in state if k.startswith("layers.")}),
                         heads=heads or max(1, D // 64), ffn=state["layers.0.fc1.weight"].shape[0], pos_kernel=pos[2],
                         pos_groups=D // pos[1], feature_layernorm="feature_norm.weight" in state)


def read_encoder(path: str):
    """Any supported checkpoint -> (EncoderConfig, encoder state, fingerprint, heads or None). Project files carry
    their config and fingerprint; foreign ones are converted (DistilHuBERT's heads as PredictionHeads tensors)."""
    obj, meta = read_file(path)
    if isinstance(obj, dict) and "encoder" in obj and "encoder_config" in obj:  # this project's format
        fp = obj.get("fingerprint") or fingerprint(obj["encoder"])
        return EncoderConfig(**obj["encoder_config"]), obj["encoder"], fp, None
    for key in ("model", "Distiller", "state_dict"):  # fairseq, s3prl, generic wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not any(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    layout, state, their_heads = convert_state({k: v for k, v in obj.items() if torch.is_tensor(v)}, path)
    missing = [k for k in ("conv.convs.0.weight", "proj.weight", "pos_conv.weight_v", "layers.0.fc1.weight")
               if k not in state]
    if missing:
        raise ValueError(f"{path} ({layout} layout) lacks {missing}: not a complete HuBERT-family encoder")
    enc_cfg = infer_config(state, meta.get("num_attention_heads", 0))
    if "mask_emb" not in state:  # torchaudio's Wav2Vec2Model has none; only pretraining uses it
        state["mask_emb"] = torch.zeros(enc_cfg.dim)
    heads = None
    if "output_layer.2.weight" in their_heads:  # s3prl SplitLinear: weight (K, D_in, D_out), bias (1, 1, K, D_out)
        w2, b2 = their_heads["output_layer.2.weight"], their_heads["output_layer.2.bias"]
        heads = {"proj.weight": their_heads["output_layer.0.weight"], "proj.bias": their_heads["output_layer.0.bias"]}
        for i in range(w2.shape[0]):
            heads[f"maps.{i}.weight"], heads[f"maps.{i}.bias"] = w2[i].T.contiguous(), b2.reshape(w2.shape[0], -1)[i]
    return enc_cfg, state, fingerprint(state), heads


# ---- Audio to distil on: a folder of audio files (ours, LibriSpeech's FLAC tree, any music collection) and crops

class AudioFolder:
    """Every file soundfile reads under `folder`, searched recursively. A corpus of up to an hour is held in memory
    as tasks.read_audio reads it; a larger one is read lazily, each crop straight from disk (resampled to 16 kHz
    when the file has another rate, channels averaged), so LibriSpeech's 960 hours need no memory."""
    EXTS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")

    def __init__(self, folder: str, hint: str = "", in_memory_s: float = 3600.0):
        paths = sorted(os.path.join(root, f) for root, _, names in os.walk(folder) for f in names
                       if f.lower().endswith(self.EXTS))
        if not paths:
            raise ValueError(f"no audio in {folder} (looked for {', '.join(self.EXTS)}); {hint or 'check the path'}")
        self.paths, self.rates, self.lengths, t0 = paths, [], [], time.time()
        for i, p in enumerate(paths):
            try:
                info = sf.info(p)
            except Exception as e:
                raise ValueError(f"{p}: unreadable audio ({e}); remove or convert it") from None
            self.rates.append(info.samplerate)
            self.lengths.append(int(info.frames * tasks.SR / info.samplerate))  # in 16 kHz samples
            if time.time() - t0 > 10 and i % 1000 == 0:
                print(f"  indexing {folder}: {i}/{len(paths)} files", flush=True)
        self.wavs = None
        if sum(self.lengths) <= in_memory_s * tasks.SR:
            self.wavs = [tasks.read_audio(p, max_seconds=600) for p in paths]
            self.lengths = [len(w) for w in self.wavs]

    def __len__(self):
        return len(self.paths)

    def read(self, i: int, start: int, n: int) -> np.ndarray:
        """Samples [start, start + n) of file i at 16 kHz (fewer at the end of the file)."""
        if self.wavs is not None:
            return self.wavs[i][start:start + n]
        sr = self.rates[i]
        q = sr // math.gcd(sr, tasks.SR)  # read a multiple of q samples: it resamples to a whole number, no drift
        first, count = int(start * sr / tasks.SR), q * math.ceil(n * sr / tasks.SR / q)
        wav, _ = sf.read(self.paths[i], start=first, frames=count, dtype="float32", always_2d=True)
        return tasks.resample(np.nan_to_num(wav.mean(1)), sr)[:n]


KINDS = ("speech", "music")


def load_pool(cfg: Config, kind: str) -> AudioFolder:
    """The speech or music corpus: --speech_dir / --music_dir, else the synthetic pool tasks.py made."""
    folder = (cfg.speech_dir if kind == "speech" else cfg.music_dir) or os.path.join(cfg.data_dir, f"pool_{kind}")
    return AudioFolder(folder, f"run python tasks.py (or delete {cfg.data_dir}/manifest.json)")


def draw_crops(pools: dict, data: str, batch: int, crop_n: int, g: torch.Generator) -> np.ndarray:
    """Where the batch's crops come from, drawn with g: rows (kind 0 speech / 1 music, file, start sample); mix =
    half the batch from each pool. -> (batch, 3)."""
    rows = []
    for kind, n in ([("speech", batch // 2), ("music", batch - batch // 2)] if data == "mix" else [(data, batch)]):
        pool = pools[kind]
        for _ in range(n):
            i = int(torch.randint(len(pool), (1,), generator=g))
            start = int(torch.randint(max(1, pool.lengths[i] - crop_n + 1), (1,), generator=g))
            rows.append((KINDS.index(kind), i, start))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def read_crops(pools: dict, rows: np.ndarray, crop_n: int) -> torch.Tensor:
    """(B, 3) crop rows -> (B, crop_n) audio, each crop zero-padded to crop_n and normalised, in row order."""
    crops = [pools[KINDS[k]].read(int(i), int(s), crop_n) for k, i, s in rows]
    return torch.from_numpy(np.stack([tasks.normalize(np.pad(w, (0, crop_n - len(w)))) for w in crops]))


def device_and_amp(cfg: Config):
    """-> (device, bf16 autocast on?). "auto" is bf16 on CUDA only: CPU runs stay fp32, so results match to the
    digit on any CPU (without AMX, a CPU's bf16 matmul is also far slower than fp32); --bf16 on asks for it."""
    device = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    return device, device in ("cuda", "cpu") and (cfg.bf16 == "on" or (cfg.bf16 == "auto" and device == "cuda"))


# ---- The teacher-target cache (--cache_targets)

class TargetBank:
    """A fixed bank of crops, drawn once with seed 0 (the same for every later run and seed), and per teacher its
    target layers for every crop, float16 on disk (data/cache/), memory-mapped. A run on a bank draws its batches
    from the bank in its own seed's order and runs no teacher at all. The mix bank (the ensemble's) is the first
    half of the speech bank's crops and of the music bank's: each teacher's targets for its own pool's half are
    copied from that pool's bank, so a teacher runs only on the other pool's crops. DEVIATION: fixed crops."""

    def __init__(self, cfg: Config, data: str, pools: dict, n: int):
        crop_n = int(cfg.crop_s * tasks.SR)
        corpus = {k: [p.paths[0], p.paths[-1], len(p), sum(p.lengths)] for k, p in sorted(pools.items())}
        key = hashlib.sha256(json.dumps([data, crop_n, n, cfg.batch, corpus, "halves"]).encode()).hexdigest()[:10]
        self.dir = os.path.join(cfg.data_dir, "cache", f"{data}_{crop_n}_{n}_{key}")
        self.pools, self.crop_n, self.targets, self.halves = pools, crop_n, {}, {}
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, "crops.npy")
        if data == "mix":  # kind -> (its rows here, its pool's bank)
            sizes = dict(zip(KINDS, (n // 2, n - n // 2)))
            banks = {k: TargetBank(cfg, k, {k: pools[k]}, n) for k in KINDS}
            self.halves = {k: (np.arange(n // 2 * i, n // 2 * i + sizes[k]), banks[k]) for i, k in enumerate(KINDS)}
        if not os.path.exists(path):
            if data == "mix":
                rows = [bank.rows[:sizes[k]] for k, (_, bank) in self.halves.items()]
            else:
                g = torch.Generator().manual_seed(0)
                rows = [draw_crops(pools, data, cfg.batch, crop_n, g) for _ in range(math.ceil(n / cfg.batch))]
            np.save(path + ".tmp.npy", np.concatenate(rows)[:n])
            os.replace(path + ".tmp.npy", path)
        self.rows = np.load(path)  # (n, 3): kind, file, start

    def add_teacher(self, domain: str, teacher: Encoder, layers: list, device: str, batch: int) -> None:
        """Compute (once) and memory-map this teacher's targets for every crop: (n, K, T, Dt) float16."""
        path = os.path.join(self.dir, f"{domain}_{teacher.fingerprint}_{'-'.join(map(str, layers))}.npy")
        if not os.path.exists(path):
            shape = (len(self.rows), len(layers), tasks.n_frames(self.crop_n), teacher.cfg.dim)
            out = np.lib.format.open_memmap(path + ".tmp.npy", "w+", np.float16, shape)
            todo = np.arange(len(self.rows))
            if domain in self.halves:  # the mix bank: this teacher's own-pool half is in that pool's bank
                own, bank = self.halves[domain]
                bank.add_teacher(domain, teacher, layers, device, batch)
                out[own] = bank.targets[domain][:len(own)]
                todo = np.setdiff1d(todo, own)
            t0 = time.time()
            for i in range(0, len(todo), batch):
                wav = read_crops(self.pools, self.rows[todo[i:i + batch]], self.crop_n).to(device)
                targets = teacher_targets({domain: teacher}, {domain: layers}, wav)[domain]
                out[todo[i:i + batch]] = targets.half().cpu().numpy()
                if time.time() - t0 > 30 and (i // batch) % 50 == 0:
                    print(f"  caching {domain} targets: {i + batch}/{len(todo)} crops, {time.time() - t0:.0f} s",
                          flush=True)
            out.flush()
            del out
            os.replace(path + ".tmp.npy", path)  # only a complete cache gets the final name
            print(f"cached {domain} teacher targets of {len(self.rows)} crops in {path} ({len(todo)} computed, "
                  f"{time.time() - t0:.0f} s)", flush=True)
        self.targets[domain] = np.load(path, mmap_mode="r")

    def batch(self, idx: np.ndarray):
        """-> (wav (B, n), {domain: targets (B, K, T, Dt) float32})."""
        return (read_crops(self.pools, self.rows[idx], self.crop_n),
                {d: torch.from_numpy(t[idx]).float() for d, t in self.targets.items()})


def open_bank(cfg: Config, data: str, pools: dict, teachers: dict, layers: dict, device: str) -> TargetBank:
    """The bank of this run's data setting with every teacher's targets, made where missing."""
    bank = TargetBank(cfg, data, pools, cfg.cache_crops or cfg.steps * cfg.batch)
    for d, teacher in teachers.items():
        bank.add_teacher(d, teacher, layers[d], device, cfg.batch)
    return bank


def build_target_bank(cfg: Config) -> None:
    """Make the bank a --cache_targets run of cfg reads, and stop (merge.py --reproduce builds each bank once,
    before the runs that share it)."""
    data = cfg.data or {"speech": "speech", "music": "music", "both": "mix"}[cfg.domain]
    device = device_and_amp(cfg)[0]
    teachers = {d: load_or_pretrain_teacher(cfg, d, device) for d in (KINDS if cfg.domain == "both" else [cfg.domain])}
    pools = {k: load_pool(cfg, k) for k in (KINDS if data == "mix" else [data])}
    open_bank(cfg, data, pools, teachers, {d: target_layers(t.cfg.layers) for d, t in teachers.items()}, device)


class Batches:
    """Each step's crops and teacher targets: fresh crops with one forward pass per teacher (online), or rows of
    the cached bank (--cache_targets), whose teachers ran once, before the first step."""

    def __init__(self, cfg: Config, run, teachers: dict, layers: dict):
        self.cfg, self.run, self.teachers, self.layers = cfg, run, teachers, layers
        self.pools = {k: load_pool(cfg, k) for k in (KINDS if run.data == "mix" else [run.data])}
        self.crop_n = int(cfg.crop_s * tasks.SR)
        self.bank = open_bank(cfg, run.data, self.pools, teachers, layers, run.device) if cfg.cache_targets else None
        run.ready()

    def next(self, g: torch.Generator):
        """-> (wav (B, n), {domain: targets (B, K, T, Dt)}) on the device, this rank's slice of the batch."""
        mine = self.run.rank_slice(self.cfg.batch)
        if self.bank is not None:
            idx = torch.randint(len(self.bank.rows), (self.cfg.batch,), generator=g).numpy()
            wav, targets = self.bank.batch(idx[mine])
        else:
            wav = read_crops(self.pools, draw_crops(self.pools, self.run.data, self.cfg.batch, self.crop_n, g)[mine],
                             self.crop_n)  # (B, n)
        wav = wav.pin_memory().to(self.run.device, non_blocking=True) if self.run.device.startswith("cuda") else wav
        if self.bank is None:
            targets = teacher_targets(self.teachers, self.layers, wav)
        return wav, {d: t.to(self.run.device) for d, t in targets.items()}


# ---- DDP and the run folder

def distributed() -> tuple:
    """(rank, world size) under torchrun (RANK, WORLD_SIZE set), with the process group started; else (0, 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


class Run:
    """One distillation's surroundings: rank and device, the run folder, the log, checkpoints and the final cost.
    Under torchrun every rank draws the same global batch and trains on its slice; rank 0 makes whatever is
    missing (data, teachers, theta0, the cache) while the others wait, and alone logs and writes."""

    def __init__(self, cfg: Config):
        check_config(cfg)
        self.cfg, self.data = cfg, cfg.data or {"speech": "speech", "music": "music", "both": "mix"}[cfg.domain]
        self.domains = list(KINDS) if cfg.domain == "both" else [cfg.domain]
        self.rank, self.world = distributed()
        if cfg.batch % self.world:
            raise ValueError(f"--batch {cfg.batch} does not split over {self.world} ranks; use a multiple of it")
        self.out_dir = cfg.out_dir or os.path.join("out", f"{cfg.domain}_{self.data}_s{cfg.seed}")
        self.ckpt_path = os.path.join(self.out_dir, "checkpoint.pt")
        self.device, self.amp = device_and_amp(cfg)
        if self.device == "cuda":
            self.device = f"cuda:{self.rank}" if self.world > 1 else self.device
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # TF32 for what bf16 leaves
        if self.world > 1 and not self.is_main_process():
            torch.distributed.barrier()  # wait while rank 0 makes whatever is missing
        if not (cfg.speech_dir and cfg.music_dir):  # the synthetic pools (and the teachers' data)
            tasks.ensure_data(cfg.data_dir)
        self.log_file = None

    def is_main_process(self) -> bool:
        return self.rank == 0

    def rank_slice(self, batch: int) -> slice:
        """This rank's part of every batch."""
        return slice(self.rank * batch // self.world, (self.rank + 1) * batch // self.world)

    def ready(self) -> None:
        if self.world > 1 and self.is_main_process():
            torch.distributed.barrier()  # everything exists now: let the other ranks read it

    def resume(self, student, heads, opt, g) -> int:
        ck = load_checkpoint(self.ckpt_path, "run without --resume")
        load_state(student, ck["encoder"], self.ckpt_path, "run without --resume")
        load_state(heads, ck["heads"], self.ckpt_path, "run without --resume")
        opt.load_state_dict(ck["optimizer"])
        g.set_state(ck["rng"])
        return ck["step"]

    def wrap(self, model):
        if self.world > 1:
            model = nn.parallel.DistributedDataParallel(model, device_ids=[self.rank] if self.device.startswith("cuda")
                                                        else None)
        return torch.compile(model) if self.cfg.compile else model

    def begin(self, student, layers: dict, theta0_fp: str, start: int, cached: bool) -> None:
        self.theta0_fp, self.start, self.metrics, self.t0 = theta0_fp, start, {}, time.time()
        if not self.is_main_process():
            return
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, "config.json"), "w") as f:
            json.dump(dict(asdict(self.cfg), data=self.data, out_dir=self.out_dir, world_size=self.world), f, indent=1)
        self.log_file = open_log(os.path.join(self.out_dir, "log.jsonl"), start)
        cfg = self.cfg
        print(f"distilling a {count_parameters(student) / 1e6:.2f}M-parameter student from {', '.join(self.domains)} "
              f"(target layers {layers}) on {self.data} audio, {cfg.steps} steps of {cfg.batch} x {cfg.crop_s} s"
              f"{f' over {self.world} ranks' if self.world > 1 else ''}, device {self.device}"
              f"{' bf16' if self.amp else ''}, {'cached targets, ' if cached else ''}theta0 {theta0_fp}", flush=True)

    def log(self, step: int, loss, stats: dict, lr: float, grad_norm) -> None:
        cfg = self.cfg
        if not self.is_main_process() or not (step % cfg.log_every == 0 or step == cfg.steps):
            return
        el, done = time.time() - self.t0, step - self.start
        self.metrics = dict(step=step, loss=round(loss.item(), 4), heads=stats, lr=lr,
                            grad_norm=round(float(grad_norm), 3), ms_per_step=round(el / done * 1000, 1),
                            audio_s_per_s=round(done * cfg.batch * cfg.crop_s / el, 1))
        self.log_file.write(json.dumps(self.metrics) + "\n")
        self.log_file.flush()
        heads = " ".join(f"{d}: L1 {'/'.join(f'{x:.3f}' for x in s['l1'])} cos {'/'.join(f'{x:.3f}' for x in s['cos'])}"
                         for d, s in stats.items())
        print(f"step {step}/{cfg.steps} loss {loss.item():.4f} | {heads} | lr {lr:.2e} "
              f"{self.metrics['ms_per_step']:.0f} ms/step {self.metrics['audio_s_per_s']:.0f} audio-s/s "
              f"ETA {el / done * (cfg.steps - step) / 60:.1f} min", flush=True)

    def checkpoint(self, step: int, student, heads, opt, g) -> None:
        if self.is_main_process():
            save_checkpoint(self.ckpt_path, encoder={k: v.cpu() for k, v in student.state_dict().items()},
                            heads={k: v.cpu() for k, v in heads.state_dict().items()}, optimizer=opt.state_dict(),
                            rng=g.get_state(), step=step, encoder_config=asdict(student.cfg),
                            theta0_fingerprint=self.theta0_fp, domain=self.cfg.domain, data=self.data,
                            metrics=self.metrics, config=asdict(self.cfg))

    def finish(self, student, teacher_runs: int) -> dict:
        """Write student.pt with the run's cost (merge.py's cost table) -> the final metrics."""
        if not self.is_main_process():
            return {}
        self.log_file.close()
        metrics = dict(self.metrics, teacher_clip_forwards=teacher_runs * self.cfg.batch,
                       wall_s=round(time.time() - self.t0, 1))
        if self.device.startswith("cuda"):
            metrics["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20)
        elif sys.platform != "win32":
            import resource  # ru_maxrss is in KiB on Linux
            metrics["peak_mem_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        path = os.path.join(self.out_dir, "student.pt")
        save_checkpoint(path, encoder={k: v.cpu() for k, v in student.state_dict().items()},
                        encoder_config=asdict(student.cfg), theta0_fingerprint=self.theta0_fp, domain=self.cfg.domain,
                        data=self.data, steps=self.cfg.steps, metrics=metrics, seed=self.cfg.seed)
        print(f"done: {path} (final distillation loss {metrics.get('loss', float('nan')):.4f}, "
              f"{time.time() - self.t0:.0f} s)", flush=True)
        return dict(metrics, student=path, seconds=time.time() - self.t0)


def open_log(path: str, start_step: int):
    """log.jsonl for appending, cut back to the lines of steps <= start_step: after a crash and --resume, the steps
    logged since the last checkpoint are run again, so their old lines go."""
    kept = []
    if start_step and os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    if json.loads(line)["step"] <= start_step:
                        kept.append(line)
                except ValueError:  # a line cut short by the crash
                    pass
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)
    return open(path, "a")


# ---- --bench: this config's student step and teacher forward, against the machine's matmul peak and, where
# transformers is installed, its HubertModel built with the same sizes under the same heads, loss and optimizer

def bench(cfg: Config, reps: int = 10) -> float:
    """Prints step times, audio-seconds/s and FLOP/s; returns the speed ratio vs transformers (0 if absent)."""
    from torch.utils.flop_counter import FlopCounterMode
    device, amp = device_and_amp(cfg)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t_cfg = teacher_config(cfg, teacher_recipe(cfg, "speech"))
    s_cfg = student_config(t_cfg)
    torch.manual_seed(0)
    student, teacher = Encoder(s_cfg).to(device).train(), Encoder(t_cfg).to(device).eval().requires_grad_(False)
    wav = torch.randn(cfg.batch, int(cfg.crop_s * tasks.SR), device=device)  # (B, n)
    targets = {"speech": torch.randn(cfg.batch, 3, tasks.n_frames(wav.shape[1]), t_cfg.dim, device=device)}
    audio_s = cfg.batch * cfg.crop_s

    def step_of(backbone):  # one distill_step of `backbone` under fresh heads and AdamW
        model = Distiller(backbone, nn.ModuleDict({"speech": PredictionHeads(s_cfg.dim, t_cfg.dim, 3)})).to(device)
        params = list(model.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
        return lambda: (distill_step(model, params, opt, wav, targets, 1e-4, cfg, amp), sync())

    def teacher_forward():
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            teacher(wav)
        sync()
    a = torch.randn(2048, 2048, device=device, dtype=torch.bfloat16 if amp else torch.float32)
    times = []
    for _ in range(6):
        t = time.perf_counter()
        a @ a, sync()
        times.append(time.perf_counter() - t)
    peak = 2 * 2048 ** 3 / float(np.median(times[1:]))
    print(f"bench: {device}, {torch.get_num_threads()} threads, {'bf16' if amp else 'fp32'}; batch {cfg.batch} x "
          f"{cfg.crop_s} s; student {count_parameters(student) / 1e6:.2f}M, teacher "
          f"{count_parameters(teacher) / 1e6:.2f}M parameters; 2048^3 matmul peak {peak / 1e9:.0f} GFLOP/s", flush=True)
    fns, flops = {"ours": step_of(student), "teacher": teacher_forward}, {}
    for name, fn in fns.items():
        with FlopCounterMode(display=False) as counter:
            fn()
        flops[name] = counter.get_total_flops()
    try:
        import transformers
        hf = transformers.HubertModel(transformers.HubertConfig(
            hidden_size=s_cfg.dim, num_hidden_layers=s_cfg.layers, num_attention_heads=s_cfg.heads,
            intermediate_size=s_cfg.ffn, conv_dim=(s_cfg.conv_channels,) * 7, num_conv_pos_embeddings=s_cfg.pos_kernel,
            num_conv_pos_embedding_groups=s_cfg.pos_groups, feat_proj_layer_norm=s_cfg.feature_layernorm,
            hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
            mask_time_prob=0.0, attn_implementation="sdpa")).to(device).train()
        fns["theirs"] = step_of(_LastHidden(hf))
    except ImportError:
        print("bench: transformers not installed, no reference comparison (pip install -r tests/requirements.txt)")
    times = {name: [] for name in fns}
    for _ in range(2):  # warm-up
        for fn in fns.values():
            fn()
    for _ in range(reps):  # interleaved, so a busy moment of the machine hits all alike
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    for name, what in (("ours", "student step"), ("teacher", "teacher forward")):
        rate = flops[name] / med[name]
        print(f"bench: {what} {med[name] * 1e3:.1f} ms = {audio_s / med[name]:.0f} audio-s/s, {flops[name] / 1e9:.1f} "
              f"GFLOP = {rate / 1e9:.1f} GFLOP/s ({100 * rate / peak:.0f}% of the matmul peak)")
    if "theirs" not in med:
        return 0.0
    print(f"bench: transformers HubertModel step {med['theirs'] * 1e3:.1f} ms (same sizes, heads, loss, optimizer; "
          f"median of {reps})")
    print(f"speed_ratio_vs_transformers {med['theirs'] / med['ours']:.2f}", flush=True)
    return med["theirs"] / med["ours"]


class _LastHidden(nn.Module):
    """transformers' HubertModel as a student backbone: (wav, conv_grad_mult) -> [last hidden state]."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, wav, conv_grad_mult: float = 1.0):
        return [self.hf(wav).last_hidden_state]


# ---- The command line

def parse_args(argv=None) -> Config:
    p = tasks.config_parser(Config, __doc__)
    preset = p.parse_known_args(argv)[0].preset
    if preset:
        if preset not in PRESETS:
            p.error(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        p.set_defaults(**PRESETS[preset])
    return Config(**vars(p.parse_args(argv)))


def check_config(cfg: Config) -> None:
    """Options out of range are refused before any work, with the valid range."""
    tasks.check_config(cfg, ranges=dict(
        steps=(1, None), batch=(1, None), crop_s=(tasks.WIN / tasks.SR, None), lr=(0, None), warmup_frac=(0, 1),
        conv_grad_mult=(0, None), teacher_steps=(1, None), music_teacher_steps=(1, None),
        front_end_steps_speech=(0, None), front_end_steps_music=(0, None), chroma_units_weight=(0, None),
        chroma_units_layer=(0, cfg.teacher_layers),
        speech_iterations=(1, 3), teacher_layers=(1, None), dim=(1, None), conv_channels=(1, None),
        music_conv_channels=(0, None), threads=(0, None), log_every=(1, None), ckpt_every=(1, None),
        cache_crops=(0, None)), choices=dict(domain=("speech", "music", "both"), data=("", "speech", "music", "mix"),
                                             bf16=("auto", "on", "off"), pretrain=("", "speech", "music"),
                                             front_end_data_music=("music", "mix"), music_units=("mfcc", "mfcc_chroma"),
                                             preset=("", *PRESETS)))


def main(argv=None):
    cfg = parse_args(argv)
    tasks.keep_freed_memory()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    print(json.dumps(asdict(cfg)), flush=True)
    try:
        check_config(cfg)
        if cfg.bench:
            bench(cfg)
        elif cfg.pretrain:
            tasks.ensure_data(cfg.data_dir)
            pretrain_teacher(cfg, cfg.pretrain, cfg.teacher_speech if cfg.pretrain == "speech" else cfg.teacher_music)
        elif cfg.init_only:
            tasks.ensure_data(cfg.data_dir)
            print(f"theta0 {load_or_make_theta0(cfg, device_and_amp(cfg)[0])['fingerprint']} at {cfg.init}")
        else:
            train(cfg)
    except (ValueError, FloatingPointError, OSError, KeyboardInterrupt) as e:
        sys.exit(tasks.one_line(e))


if __name__ == "__main__":
    main()
