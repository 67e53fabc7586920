"""Tiny HuBERT/MERT teachers and DistilHuBERT-style distillation into a 2-layer student (paper Sec. 2-3).

The pipeline of Ritter-Gutierrez et al. (Interspeech 2025), steps 1-3 and 6 of ../shared/PAPER.md Sec. 2:
  1. teachers: a speech teacher (HuBERT-like: masked prediction of k-means units of MFCCs) and a music teacher
     (MERT-like: units of MFCC + chroma, plus reconstruction of a semitone-spaced spectrum on masked frames),
     pretrained here on the synthetic pools when data/teachers/{speech,music}.pt are missing;
  2. theta0: a 2-layer student whose conv extractor, projection, positional conv and layers come from the SPEECH
     teacher's lower layers, written once to out/theta0.pt with a fingerprint;
  3. distillation from one teacher (--domain speech|music) or both at once (--domain both, the ensemble baseline):
     prediction heads regress teacher layers at 1/3, 2/3, 3/3 of its depth with L1 - log sigmoid(cos).

One Encoder class with HuBERT Base's architecture serves as teacher, student and (with real weights) HuBERT itself:
7-layer conv feature extractor (hop 320, 50 Hz) -> [LayerNorm] -> Linear to D -> weight-normed grouped positional
conv -> LayerNorm -> post-LN transformer layers. forward(wav) returns every hidden state: hidden[0] is the input to
layer 1, hidden[i] the output of layer i.

Usage:  python tiny_distill.py --domain music          # data, teachers and theta0 made if missing
        python tiny_distill.py --domain speech --seed 1
        python tiny_distill.py --domain both           # ensemble distillation
        python tiny_distill.py --pretrain speech       # rebuild a teacher
        python tiny_distill.py --pretrain music --front_end_steps 0 --teacher_music /tmp/m.pt   # random frozen front end
        python tiny_distill.py --domain music --cache_targets       # teacher targets cached on disk, reused
        python tiny_distill.py --bench                 # step times, FLOP/s, ratio to transformers' HubertModel
        torchrun --nproc_per_node 2 tiny_distill.py --domain music  # DDP
        python tiny_distill.py --preset paper --teacher_speech hubert_base_ls960.pt \
            --teacher_music MERT-v0-public/ --speech_dir LibriSpeech/ --init out/theta0_paper.pt   # real teachers
"""
import argparse
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
from dataclasses import asdict, dataclass, fields

import numpy as np
import soundfile as sf
import torch
import torch.nn as nn
import torch.nn.functional as F

import tasks

try:
    import resource  # peak memory of the process, for the cost table; Unix only
except ImportError:
    resource = None


@dataclass
class Config:
    domain: str = "music"  # teacher(s) to distil from: speech | music | both (ensemble baseline)
    data: str = ""  # distillation audio: speech | music | mix; empty = the domain's own pool (mix for both)
    steps: int = 500  # distillation steps (DEVIATION: hundreds, not the paper's 200k; 3.3 min on 2 CPU cores)
    batch: int = 8  # crops per step
    crop_s: float = 2.0  # crop length, seconds
    lr: float = 5e-4  # peak AdamW learning rate
    warmup_frac: float = 0.07  # linear warmup, then linear decay to 0 (DistilHuBERT)
    conv_grad_mult: float = 0.1  # gradient scale of the student's conv extractor (DistilHuBERT feature_grad_mult)
    seed: int = 0  # data order and masking; theta0 does not depend on it
    out_dir: str = ""  # run folder; empty = out/<domain>_<data>_s<seed>
    data_dir: str = "data"  # corpora (made by tasks.py if missing)
    speech_dir: str = ""  # speech audio for distillation (e.g. LibriSpeech/train-clean-100); empty = data_dir/pool_speech
    music_dir: str = ""  # music audio for distillation, any folder of audio files; empty = data_dir/pool_music
    teacher_speech: str = "data/teachers/speech.pt"  # speech teacher checkpoint (pretrained here if missing)
    teacher_music: str = "data/teachers/music.pt"  # music teacher checkpoint (pretrained here if missing)
    init: str = "out/theta0.pt"  # theta0, the shared student init (made from the speech teacher if missing)
    init_only: bool = False  # write theta0 and stop
    pretrain: str = ""  # speech | music: (re)train that teacher and stop
    teacher_steps: int = 2000  # speech teacher pretraining steps, split evenly over its iterations
    music_teacher_steps: int = 1000  # music teacher pretraining steps (fewer: its wider front end costs 2x a step)
    front_end_steps: int = 800  # teacher stage 0: steps fitting the conv extractor to spectra (0: random, frozen)
    speech_iterations: int = 1  # HuBERT-style unit iterations for the speech teacher (2: then units of layer 3)
    recon_weight: float = 1.0  # music teacher: weight of the semitone-spectrum reconstruction (MERT's CQT loss)
    teacher_lr_speech: float = 5e-4  # speech teacher's peak learning rate
    teacher_lr_music: float = 3e-4  # music teacher's peak learning rate (lower kept pitch better in PILOTS.md)
    teacher_layers: int = 6  # teacher depth (the student has 2: a third, as 4 of 12 in the paper's targets)
    dim: int = 192  # teacher and student width D
    conv_channels: int = 64  # conv extractor channels C (speech teacher, theta0 and students)
    music_conv_channels: int = 128  # the music teacher's C (never in theta0; 0: conv_channels); pitch needs width
    resume: bool = False  # continue from out_dir/checkpoint.pt
    bf16: str = "auto"  # bfloat16 autocast: auto (CUDA, or a CPU with AMX) | on | off
    threads: int = 0  # torch threads (0 = torch's default)
    log_every: int = 50  # steps between log lines
    ckpt_every: int = 250  # steps between checkpoints
    cache_targets: bool = False  # distil from a fixed crop bank with the teachers' targets cached on disk (data/cache/)
    cache_crops: int = 0  # crops in that bank (0 = steps x batch)
    compile: bool = False  # torch.compile the student and heads (GPU; compiling costs minutes on a CPU)
    bench: bool = False  # time the student step and teacher forward of this config (and transformers') and stop
    preset: str = ""  # paper: the paper's student recipe (steps, batch, crop, lr; see PRESETS)


# ----------------------------------------------------------------------------------------------------------------
# The encoder, bottom-up (HuBERT Base architecture, PAPER.md Sec. 3; sizes from EncoderConfig)

@dataclass
class EncoderConfig:
    conv_channels: int = 512  # C, conv extractor channels
    dim: int = 768  # D, transformer width
    layers: int = 12  # transformer layers
    heads: int = 12  # attention heads
    ffn: int = 3072  # feed-forward width
    pos_kernel: int = 128  # positional conv kernel (frames)
    pos_groups: int = 16  # positional conv groups
    feature_layernorm: bool = True  # LayerNorm(C) before the projection (HuBERT yes, DistilHuBERT no)


CONV_LAYERS = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2  # (kernel, stride): hop 320, receptive field 400


def conv_frames(n_samples: int) -> int:
    """Frames out of the conv extractor for n_samples: the 7 valid convolutions one after another."""
    for k, s in CONV_LAYERS:
        n_samples = (n_samples - k) // s + 1
    return max(0, n_samples)


class ConvFeatureExtractor(nn.Module):
    """wav (B, n) -> (B, T, C). No conv bias; GroupNorm(C groups) after conv 0 only (fairseq "default" mode)."""

    def __init__(self, C: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(1 if i == 0 else C, C, k, s, bias=False) for i, (k, s) in enumerate(CONV_LAYERS))
        self.norm = nn.GroupNorm(C, C)
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight)  # fairseq's init; torch's default leaves outputs ~1e-7 (PILOTS.md)

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
        # fp32 on purpose: torch 2.13's CPU bf16 grouped conv is wrong for 8-12 channels per group (PILOTS.md)
        with torch.autocast(x.device.type, enabled=False):
            y = F.conv1d(x.float().transpose(1, 2), w.float(), self.bias.float(), padding=self.kernel // 2, groups=self.groups)
        if self.kernel % 2 == 0:
            y = y[:, :, :-1]
        return F.gelu(y).transpose(1, 2).to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, D: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(D, D) for _ in range(4))

    def forward(self, x):  # (B, T, D) -> (B, T, D)
        B, T, D = x.shape
        q, k, v = (p(x).view(B, T, self.heads, D // self.heads).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
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
    """wav (B, n) -> list of layers + 1 hidden states, each (B, T, D), T = conv_frames(n)."""

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
        extractor's gradient without changing its output (DistilHuBERT's feature_grad_mult)."""
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


def fingerprint(state: dict) -> str:
    """A short hash of a state dict's names and values: equal fingerprints mean identical tensors."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if state[k].numel() else b"")
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints: plain dicts of tensors and numbers, written atomically, read with weights_only=True

def save_checkpoint(path: str, **parts) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(parts, path + ".tmp")
    os.replace(path + ".tmp", path)  # a crash mid-write leaves the previous checkpoint intact


def load_checkpoint(path: str, rebuild: str) -> dict:
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint not found: {path}; {rebuild}")
    try:
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


# ----------------------------------------------------------------------------------------------------------------
# Real checkpoints (PAPER.md Sec. 3): HuBERT Base, MERT-v0-public and DistilHuBERT in the layouts people download,
# renamed onto this Encoder; sizes are inferred from the tensors. Verified by tests/test_real.py against
# transformers' HubertModel (parity of every hidden state); real weights were never loaded here.

N, W = r"(\d+)", r"(weight|bias)"
KEY_MAPS = {  # layout -> [(their name as a full-match regex, ours)], after weight-norm keys became weight_g/weight_v
    "transformers": [  # HubertModel, MERT's music_hubert (pytorch_model.bin / model.safetensors), "hubert." dropped
        (rf"feature_extractor\.conv_layers\.{N}\.conv\.weight", r"conv.convs.\1.weight"),
        (rf"feature_extractor\.conv_layers\.0\.layer_norm\.{W}", r"conv.norm.\1"),
        (rf"feature_projection\.layer_norm\.{W}", r"feature_norm.\1"),
        (rf"feature_projection\.projection\.{W}", r"proj.\1"),
        (r"masked_spec_embed", "mask_emb"),
        (r"encoder\.pos_conv_embed\.conv\.(weight_g|weight_v|bias)", r"pos_conv.\1"),
        (rf"encoder\.layer_norm\.{W}", r"norm.\1"),
        (rf"encoder\.layers\.{N}\.attention\.(q|k|v|out)_proj\.{W}", r"layers.\1.attention.\2_proj.\3"),
        (rf"encoder\.layers\.{N}\.layer_norm\.{W}", r"layers.\1.attention_norm.\2"),
        (rf"encoder\.layers\.{N}\.feed_forward\.intermediate_dense\.{W}", r"layers.\1.fc1.\2"),
        (rf"encoder\.layers\.{N}\.feed_forward\.output_dense\.{W}", r"layers.\1.fc2.\2"),
        (rf"encoder\.layers\.{N}\.final_layer_norm\.{W}", r"layers.\1.final_norm.\2"),
    ],
    "fairseq": [  # hubert_base_ls960.pt ("model") and s3prl's DistilHuBERT ("Distiller", no feature LayerNorm)
        (rf"feature_extractor\.conv_layers\.{N}\.0\.weight", r"conv.convs.\1.weight"),
        (rf"feature_extractor\.conv_layers\.0\.2\.{W}", r"conv.norm.\1"),
        (rf"layer_norm\.{W}", r"feature_norm.\1"),
        (rf"post_extract_proj\.{W}", r"proj.\1"),
        (r"mask_emb", "mask_emb"),
        (r"encoder\.pos_conv\.0\.(weight_g|weight_v|bias)", r"pos_conv.\1"),
        (rf"encoder\.layer_norm\.{W}", r"norm.\1"),
        (rf"encoder\.layers\.{N}\.self_attn\.(q|k|v|out)_proj\.{W}", r"layers.\1.attention.\2_proj.\3"),
        (rf"encoder\.layers\.{N}\.self_attn_layer_norm\.{W}", r"layers.\1.attention_norm.\2"),
        (rf"encoder\.layers\.{N}\.(fc1|fc2)\.{W}", r"layers.\1.\2.\3"),
        (rf"encoder\.layers\.{N}\.final_layer_norm\.{W}", r"layers.\1.final_norm.\2"),
    ],
}
# torchaudio's Wav2Vec2Model (hubert_fairseq_base_ls960.pth; HuBERTPretrainModel's "wav2vec2." dropped) has the
# transformers names, with the projection under encoder. and the transformer under encoder.transformer.
TORCHAUDIO_PREFIXES = [(r"feature_projection\.", r"encoder\.feature_projection\."), (r"encoder\.", r"encoder\.transformer\."),
                       (r"masked_spec_embed", r"mask_generator\.mask_embedding")]
KEY_MAPS["torchaudio"] = [(next((new + p[len(old):] for old, new in TORCHAUDIO_PREFIXES if p.startswith(old)), p), o)
                          for p, o in KEY_MAPS["transformers"]]
# pretraining and fine-tuning heads, not part of any encoder: HuBERT's final_proj / label_embs_concat, a CTC lm_head,
# s3prl's prediction heads (output_layer, returned separately by read_encoder)
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
    """The pure-Python unpickler with two changes that make a file unable to run code: every global outside
    TORCH_REBUILD is _Opaque (so REDUCE and NEWOBJ can only call those functions or build inert data), and BUILD
    (setstate) is allowed on _Opaque objects and on a state dict's OrderedDict alone. last_inert lists the globals
    replaced in the latest read, for the error message."""
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
        found = [os.path.join(path, n) for n in ("model.safetensors", "pytorch_model.bin") if os.path.isfile(os.path.join(path, n))]
        if not found:
            raise ValueError(f"{path} is a folder without model.safetensors or pytorch_model.bin")
        path = found[0]
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ValueError(f"{path} is a .safetensors file: pip install safetensors, or use pytorch_model.bin") from None
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
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
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
                         f"{' ...' if len(unknown) > 8 else ''}; is it a HuBERT-family model (group-norm conv, post-LN)?")
    return layout, state, heads


def infer_config(state: dict, heads: int = 0) -> EncoderConfig:
    """Sizes from tensor shapes. The head count is not in any shape: config.json's when given, else D / 64 (the
    head width of HuBERT Base and Large, DistilHuBERT and MERT)."""
    D = state["proj.weight"].shape[0]
    return EncoderConfig(conv_channels=state["conv.convs.0.weight"].shape[0], dim=D,
                         layers=len({k.split(".")[1] for k in state if k.startswith("layers.")}), heads=heads or max(1, D // 64),
                         ffn=state["layers.0.fc1.weight"].shape[0], pos_kernel=state["pos_conv.weight_v"].shape[2],
                         pos_groups=D // state["pos_conv.weight_v"].shape[1], feature_layernorm="feature_norm.weight" in state)


def read_encoder(path: str):
    """Any supported checkpoint -> (EncoderConfig, encoder state, fingerprint, heads or None). Project files carry
    their config and fingerprint; foreign ones are converted (DistilHuBERT's heads as PredictionHeads tensors)."""
    obj, meta = read_file(path)
    if isinstance(obj, dict) and "encoder" in obj and "encoder_config" in obj:  # this project's format
        return EncoderConfig(**obj["encoder_config"]), obj["encoder"], obj.get("fingerprint") or fingerprint(obj["encoder"]), None
    for key in ("model", "Distiller", "state_dict"):  # fairseq, s3prl, generic wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not any(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    layout, state, their_heads = convert_state({k: v for k, v in obj.items() if torch.is_tensor(v)}, path)
    missing = [k for k in ("conv.convs.0.weight", "proj.weight", "pos_conv.weight_v", "layers.0.fc1.weight") if k not in state]
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


# ----------------------------------------------------------------------------------------------------------------
# Audio for training: a folder of audio files (ours, LibriSpeech's FLAC tree, any music collection), random crops,
# the same per-clip normalisation as everywhere

class AudioFolder:
    """Every file soundfile reads under `folder`, searched recursively. A corpus of up to an hour is held in memory
    as tasks.read_audio reads it; a larger one is read lazily, each crop straight from disk (resampled to 16 kHz
    when the file has another rate, channels averaged), so LibriSpeech's 960 hours need no memory."""
    EXTS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")

    def __init__(self, folder: str, hint: str = "", in_memory_s: float = 3600.0):
        paths = sorted(os.path.join(root, f) for root, _, names in os.walk(folder) for f in names if f.lower().endswith(self.EXTS))
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


def load_pool(cfg: "Config", kind: str) -> AudioFolder:
    """The speech or music corpus: --speech_dir / --music_dir, else the synthetic pool tasks.py made."""
    folder = (cfg.speech_dir if kind == "speech" else cfg.music_dir) or os.path.join(cfg.data_dir, f"pool_{kind}")
    return AudioFolder(folder, f"run python tasks.py (or delete {cfg.data_dir}/manifest.json)")


def crop_specs(pool: AudioFolder, batch: int, crop_n: int, g: torch.Generator) -> list:
    """The random draws of `batch` crops: [(file index, start sample)]."""
    specs = []
    for _ in range(batch):
        i = int(torch.randint(len(pool), (1,), generator=g))
        specs.append((i, int(torch.randint(max(1, pool.lengths[i] - crop_n + 1), (1,), generator=g))))
    return specs


def read_crop(pool: AudioFolder, i: int, start: int, crop_n: int) -> np.ndarray:
    """One crop, zero-padded to crop_n and normalised -> (crop_n,)."""
    wav = pool.read(i, start, crop_n)
    return tasks.normalize(np.pad(wav, (0, crop_n - len(wav))))


def sample_crops(pool: AudioFolder, batch: int, crop_n: int, g: torch.Generator) -> torch.Tensor:
    """batch random crops of crop_n samples, each normalised -> (batch, crop_n)."""
    return torch.from_numpy(np.stack([read_crop(pool, i, s, crop_n) for i, s in crop_specs(pool, batch, crop_n, g)]))


KINDS = ("speech", "music")


def draw_batch(pools: dict, data: str, batch: int, crop_n: int, g: torch.Generator) -> np.ndarray:
    """One batch's crops as rows (kind 0 speech / 1 music, file, start); mix = half the batch from each pool."""
    parts = [("speech", batch // 2), ("music", batch - batch // 2)] if data == "mix" else [(data, batch)]
    return np.array([(KINDS.index(k), i, s) for k, n in parts for i, s in crop_specs(pools[k], n, crop_n, g)], dtype=np.int64)


def read_batch(pools: dict, specs: np.ndarray, crop_n: int) -> torch.Tensor:
    """(B, 3) crop rows -> (B, crop_n) normalised audio, in row order."""
    return torch.from_numpy(np.stack([read_crop(pools[KINDS[k]], int(i), int(s), crop_n) for k, i, s in specs]))


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


def device_and_amp(cfg: Config):
    """-> (device, bf16 autocast on?). Without AMX a CPU's bf16 matmul is far slower than fp32 (measured 125x on
    an AVX2-only Xeon), so "auto" uses bf16 only on CUDA or an AMX CPU."""
    if cfg.bf16 not in ("auto", "on", "off"):
        raise ValueError(f"--bf16 must be auto, on or off, got {cfg.bf16!r}")
    device = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    auto = device == "cuda" or (device == "cpu" and cpu_has_amx())
    return device, device in ("cuda", "cpu") and (cfg.bf16 == "on" or (cfg.bf16 == "auto" and auto))


def lr_at(step: int, total: int, peak: float, warmup_frac: float) -> float:
    """Linear warmup over warmup_frac of the steps, then linear decay to zero (DistilHuBERT's schedule)."""
    warm = max(1, int(warmup_frac * total))
    return peak * step / warm if step < warm else peak * max(0.0, (total - step) / max(1, total - warm))


# ----------------------------------------------------------------------------------------------------------------
# Teachers: HuBERT-like (speech) and MERT-like (music) masked prediction, tiny and on the synthetic pools

def frame_spectra(wav: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Power spectra on the encoder's frame grid: frame i centred on sample 320 i + 200. (B, n) -> (B, T, n_fft/2+1)."""
    T = tasks.n_frames(wav.shape[-1])
    pad = (n_fft - tasks.WIN) // 2
    x = F.pad(wav, (pad, pad + n_fft))
    frames = x.unfold(-1, n_fft, tasks.HOP)[:, :T] * torch.hann_window(n_fft)  # (B, T, n_fft)
    return torch.fft.rfft(frames).abs() ** 2


def mfcc(wav: torch.Tensor, n_mfcc: int = 13) -> torch.Tensor:
    """MFCCs with deltas, 39 dims per 20 ms frame (HuBERT iteration 1 clusters these). (B, n) -> (B, T, 39)."""
    import probe  # the mel filterbank lives with the log-mel baseline
    logmel = torch.log(frame_spectra(wav, 512) @ probe.mel_filterbank(40) + 1e-6)  # (B, T, 40)
    k = torch.arange(40)
    dct = torch.cos(math.pi / 40 * (k[:, None] + 0.5) * torch.arange(n_mfcc)[None])  # (40, 13) DCT-II
    c = logmel @ dct
    d1 = torch.gradient(c, dim=1)[0]
    return torch.cat([c, d1, torch.gradient(d1, dim=1)[0]], -1)


def semitone_spectrum(wav: torch.Tensor, bins_per_semitone: int = 3) -> torch.Tensor:
    """A CQT-like log spectrum: a 128 ms window (enough resolution for low notes) folded into bins spaced by 1/3
    semitone from MIDI 28 to 100 (41 Hz - 2.6 kHz). MERT's musical teacher reconstructs a CQT. (B, T, 216)."""
    n_fft = 2048
    power = frame_spectra(wav, n_fft)  # (B, T, 1025)
    freqs = torch.fft.rfftfreq(n_fft, 1 / tasks.SR)
    centres = 440 * 2 ** ((torch.arange(28 * bins_per_semitone, 100 * bins_per_semitone) / bins_per_semitone - 69) / 12)
    width = centres * (2 ** (1 / (12 * bins_per_semitone)) - 1)  # one bin's bandwidth
    fb = torch.exp(-0.5 * ((freqs[:, None] - centres[None]) / torch.clamp(width, min=freqs[1] / 2)) ** 2)
    return torch.log(power @ (fb / fb.sum(0)) + 1e-6)


def unit_features(wav: torch.Tensor, domain: str) -> torch.Tensor:
    """Features whose k-means clusters are the teacher's targets: MFCCs (HuBERT), or MFCCs + chroma for music
    (DEVIATION: MERT-v0 clusters log-mel + chroma; here log-mel units left timbre to the front end alone: README,
    "Teachers"). (B, n) -> (B, T, 39) speech, (B, T, 39 + 12) music."""
    if domain == "speech":
        return mfcc(wav)
    semis = semitone_spectrum(wav, 1).exp()  # (B, T, 72), one bin per semitone
    chroma = semis.view(*semis.shape[:2], 6, 12).sum(2)  # (B, T, 12) pitch classes
    return torch.cat([mfcc(wav), torch.log(chroma / chroma.sum(-1, keepdim=True) + 1e-3)], -1)


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
    """HuBERT masking: each frame starts a masked span of `span` frames with probability start_prob
    (mask_prob 0.8 / span 10), about half the frames end up masked. -> (B, T) bool."""
    starts = (torch.rand(B, T, generator=g) < start_prob).float()
    starts[torch.arange(B), torch.randint(T, (B,), generator=g)] = 1.0  # at least one span per clip
    return F.max_pool1d(F.pad(starts[:, None], (span - 1, 0)), span, 1)[:, 0] > 0


def fit_front_end(enc: Encoder, pool: "AudioFolder", cfg: Config, g: torch.Generator, steps: int, device: str,
                  domain: str = "speech") -> float:
    """Stage 0 of a teacher (--front_end_steps): train the conv extractor and a linear read-out to regress each
    frame's spectrum, then freeze it. The target is the domain's own spectrum: speech, the mel spectrum of
    probe.LogMel's 400-sample window (SUPERB's FBANK); music, that mel spectrum (timbre, the whole band) next to the
    1/3-semitone CQT-like spectrum of a 128 ms window (MERT's CQT target, 41 Hz - 2.6 kHz), whose fine low-frequency
    resolution asks the conv stack to find each note's period (README, Teachers: either alone lost one of the two).
    Cube-root compressed (PLP's loudness law) and standardised over the pool, not per clip, so the clip's spectral
    envelope stays in the target.
    DEVIATION (PILOTS.md): HuBERT trains its front end end to end; at our scale one trained on units collapsed, and
    a frozen random one keeps little of what log-mel keeps. A regression target cannot be met by discarding the
    spectrum. Returns the explained variance on the last batch. Measured effect: README, "Teachers"."""
    import probe  # the log-mel baseline is the speech target
    logmel = probe.LogMel()
    def spectrum(wav):  # (B, n) -> (B, T, 80) speech, (B, T, 80 + 216) music
        power = logmel.power(wav)
        if domain == "music":  # the semitone bins for pitch, the mel bands for the timbre above 2.6 kHz
            power = torch.cat([power, semitone_spectrum(wav).exp()], -1)
        return power ** (1 / 3)
    target = "mel + CQT-like semitone" if domain == "music" else "mel"
    print(f"teacher {domain} stage 0: fitting the conv extractor to {target} spectra ({steps} steps)", flush=True)
    crop_n = int(cfg.crop_s * tasks.SR)
    with torch.no_grad():  # global (not per-clip) standardisation keeps each clip's spectral envelope in the target
        ref = spectrum(sample_crops(pool, 32, crop_n, g)).flatten(0, 1)
        mean, std = ref.mean(0), ref.std(0) + 1e-5
    readout = nn.Linear(enc.cfg.conv_channels, len(mean)).to(device)
    params = list(enc.conv.parameters()) + list(readout.parameters())
    peak_lr = 3e-3
    opt = torch.optim.AdamW(params, lr=peak_lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
    t0 = time.time()
    for step in range(1, steps + 1):
        wav = sample_crops(pool, cfg.batch * 2, crop_n, g)  # (B, n)
        with torch.no_grad():
            target = ((spectrum(wav) - mean) / std).to(device)  # (B, T, 80 or 296)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, peak_lr, 0.05)
        err = ((readout(enc.conv(wav.to(device))) - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        err.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        if step % cfg.log_every == 0 or step == steps:
            el = time.time() - t0
            print(f"front end step {step}/{steps} {domain} spectrum explained variance {1 - err.item():.3f} "
                  f"{el / step * 1000:.0f} ms/step ETA {el / step * (steps - step) / 60:.1f} min", flush=True)
    return 1 - err.item()


def teacher_config(cfg: Config, domain: str = "speech") -> EncoderConfig:
    if cfg.preset == "paper":
        return EncoderConfig()  # HuBERT Base's sizes (12 x 768, 12 heads, positional kernel 128 in 16 groups)
    # DEVIATION: tiny teachers (6 layers x 192) stand in for HuBERT Base and MERT-v0-public (12 x 768), same blocks;
    # the music teacher's conv stack is wider (at C=64, fewer channels than its 216 semitone bins, pitch suffered)
    C = cfg.music_conv_channels if domain == "music" and cfg.music_conv_channels else cfg.conv_channels
    return EncoderConfig(conv_channels=C, dim=cfg.dim, layers=cfg.teacher_layers, heads=max(1, cfg.dim // 48),
                         ffn=4 * cfg.dim, pos_kernel=64, pos_groups=cfg.dim // 16, feature_layernorm=True)


def pretrain_teacher(cfg: Config, domain: str, path: str) -> None:
    """HuBERT-style masked prediction of k-means units, plus (music) masked semitone-spectrum reconstruction.
    Speech runs HuBERT's iterations: iteration 1 clusters MFCCs, iteration 2 the middle layer of iteration 1.
    DEVIATIONS (reduced scale, PILOTS.md): the conv extractor stays frozen at its random init, since in every pilot
    a trainable one collapsed and lost pitch; iteration 2 continues from iteration 1's weights instead of starting
    afresh; a linear unit classifier instead of HuBERT's cosine-similarity head; unmasked frames' cross-entropy at
    weight 0.1 next to the masked frames' (it helped the pilots most)."""
    device, amp = device_and_amp(cfg)
    g = torch.Generator().manual_seed(1000 + (domain == "music"))
    torch.manual_seed(1000 + (domain == "music"))
    pool = load_pool(cfg, domain)
    crop_n = int(cfg.crop_s * tasks.SR)
    n_units = 100
    enc_cfg = teacher_config(cfg, domain)
    enc = Encoder(enc_cfg).to(device)
    t_start = time.time()  # the whole build, stage 0 included, goes into the checkpoint's "seconds"
    if cfg.front_end_steps:
        fit_front_end(enc, pool, cfg, g, cfg.front_end_steps, device, domain)
    enc.conv.requires_grad_(False)  # frozen from here on (PILOTS.md: trained on units, it collapsed)
    recon_head = None
    iterations = cfg.speech_iterations if domain == "speech" else 1  # MERT-v0 has one set of acoustic units
    steps = (cfg.teacher_steps if domain == "speech" else cfg.music_teacher_steps) // iterations
    peak_lr = cfg.teacher_lr_speech if domain == "speech" else cfg.teacher_lr_music
    print(f"teacher {domain}: {count_parameters(enc) / 1e6:.2f}M parameters, {iterations} x {steps} steps of "
          f"{cfg.batch * 2} x {cfg.crop_s} s", flush=True)
    t0 = time.time()
    for it in range(iterations):
        def featurize(wav):  # (B, n) -> (B, T, d): what this iteration's units cluster
            if it == 0:
                return unit_features(wav, domain)
            return enc(wav.to(device))[enc_cfg.layers // 2].float().cpu()
        what = "MFCC" if domain == "speech" else "MFCC + chroma"
        print(f"teacher {domain} iteration {it + 1}: k-means ({n_units} units) on "
              f"{what if it == 0 else f'layer {enc_cfg.layers // 2}'} features of the {domain} pool", flush=True)
        with torch.no_grad():
            feats = torch.cat([featurize(sample_crops(pool, 16, crop_n, g)).flatten(0, 1) for _ in range(16)])
        mean, std = feats.mean(0), feats.std(0) + 1e-5
        centroids = kmeans((feats - mean) / std, n_units, iters=20, g=g)
        unit_head = nn.Linear(enc_cfg.dim, n_units).to(device)
        if domain == "music" and recon_head is None:  # 216 bins: 1/3 semitone from MIDI 28 to 100
            recon_head = nn.Linear(enc_cfg.dim, 216).to(device)
        params = [p for m in (enc, unit_head, recon_head) if m is not None for p in m.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=peak_lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
        for step in range(1, steps + 1):
            wav = sample_crops(pool, cfg.batch * 2, crop_n, g)  # (B, n)
            with torch.no_grad():
                units = torch.cdist((featurize(wav) - mean) / std, centroids[None]).argmin(-1)  # (B, T)
                target_spec = semitone_spectrum(wav) if domain == "music" else None
            mask = span_mask(*units.shape, g)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, peak_lr, 0.08)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
                top = enc(wav.to(device), mask.to(device))[-1]  # (B, T, D)
                logits = unit_head(top).float()
            ce = F.cross_entropy(logits.transpose(1, 2), units.to(device), reduction="none")  # (B, T)
            m = mask.to(device).float()
            loss = (ce * m).sum() / m.sum() + 0.1 * (ce * (1 - m)).sum() / (1 - m).sum().clamp(min=1)
            if recon_head is not None:  # MERT's musical teacher: reconstruct the CQT-like spectrum of masked frames
                spec = (target_spec.to(device) - target_spec.mean()) / (target_spec.std() + 1e-5)
                recon = ((recon_head(top).float() - spec) ** 2).mean(-1)  # (B, T)
                loss = loss + cfg.recon_weight * (recon * m).sum() / m.sum()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"teacher {domain}: loss is {loss.item()} at step {step}; lower --teacher_lr_{domain}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            if step % cfg.log_every == 0 or step == steps:
                acc = ((logits.argmax(-1) == units.to(device)).float() * m).sum() / m.sum()
                el, done = time.time() - t0, it * steps + step
                print(f"teacher {domain} iteration {it + 1} step {step}/{steps} loss {loss.item():.3f} masked-unit acc "
                      f"{acc.item():.3f} {el / done * 1000:.0f} ms/step ETA {el / done * (iterations * steps - done) / 60:.1f} min",
                      flush=True)
    # stored in float16 (half the size; teachers are frozen, and float32 is restored on load)
    state = {k: v.cpu().half() if v.is_floating_point() else v.cpu() for k, v in enc.state_dict().items()}
    save_checkpoint(path, encoder=state, encoder_config=asdict(enc_cfg), domain=domain, steps=iterations * steps,
                    seconds=round(time.time() - t_start, 1), fingerprint=fingerprint(state), config=asdict(cfg))
    print(f"teacher {domain}: wrote {path} (fingerprint {fingerprint(state)}, {time.time() - t_start:.0f} s)", flush=True)


def get_teacher(cfg: Config, domain: str, device: str) -> Encoder:
    """The frozen teacher at --teacher_<domain>. Pretrained there (about 15 minutes) only when the default path is
    missing: a path typed on the command line that does not exist is a typo until shown otherwise."""
    path = cfg.teacher_speech if domain == "speech" else cfg.teacher_music
    if not os.path.exists(path):
        if path != getattr(Config, f"teacher_{domain}"):
            raise ValueError(f"--teacher_{domain} {path}: no such file or folder; check the path, or make a teacher "
                             f"there with python tiny_distill.py --pretrain {domain} --teacher_{domain} {path}")
        print(f"no {domain} teacher at {path}: pretraining one (python tiny_distill.py --pretrain {domain})", flush=True)
        pretrain_teacher(cfg, domain, path)
    return load_encoder(path, device)


# ----------------------------------------------------------------------------------------------------------------
# Student and theta0 (paper Sec. 2, step 1): the speech teacher's lower layers, stored once with a fingerprint

def student_config(teacher_cfg: EncoderConfig) -> EncoderConfig:
    return EncoderConfig(**{**asdict(teacher_cfg), "layers": 2})


def make_theta0(speech_teacher: Encoder) -> dict:
    """The student backbone copied from the speech teacher: conv, feature LayerNorm, projection, mask embedding,
    positional conv, encoder LayerNorm and layers 1-2 (DistilHuBERT's init; the paper inits both students so)."""
    student = Encoder(student_config(speech_teacher.cfg))
    own = student.state_dict()
    teacher = speech_teacher.state_dict()
    state = {k: teacher[k].clone() for k in own}  # every student key exists in the teacher (layers 0, 1 included)
    load_state(student, state, "theta0", "check the speech teacher")
    return {k: v.cpu() for k, v in student.state_dict().items()}


def get_theta0(cfg: Config, device: str):
    """-> (theta0 checkpoint, its fingerprint). Made from the speech teacher when cfg.init is missing."""
    if not os.path.exists(cfg.init):
        teacher = get_teacher(cfg, "speech", device)
        theta0 = make_theta0(teacher)
        save_checkpoint(cfg.init, encoder=theta0, encoder_config=asdict(student_config(teacher.cfg)),
                        fingerprint=fingerprint(theta0), teacher_fingerprint=teacher.fingerprint)
        print(f"theta0: wrote {cfg.init} (fingerprint {fingerprint(theta0)})", flush=True)
    ckpt = load_checkpoint(cfg.init, "delete it and rerun with --init_only")
    if fingerprint(ckpt["encoder"]) != ckpt["fingerprint"]:
        raise ValueError(f"{cfg.init}: tensors do not match the stored fingerprint; delete it and rerun --init_only")
    return ckpt, ckpt["fingerprint"]


class PredictionHeads(nn.Module):
    """DistilHuBERT's heads: one projection to K * D_teacher, GELU, then K separate maps, one per target layer.
    (B, T, D) -> (B, K, T, D_teacher). Not part of the backbone: never in a task vector."""

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
    """Teacher layers at 1/3, 2/3 and 3/3 of its depth: 4, 8, 12 for HuBERT Base (paper Sec. 2)."""
    return [round(teacher_layers * i / 3) for i in (1, 2, 3)]


def distill_loss(pred: torch.Tensor, target: torch.Tensor):
    """s3prl's distiller loss per head: mean L1 - mean log sigmoid(cos) over frames, averaged over heads.
    pred, target: (B, K, T, D) -> (loss, per-head L1 (K,), per-head cos (K,))."""
    l1 = (pred - target).abs().mean((0, 2, 3))  # (K,)
    cos = F.cosine_similarity(pred, target, dim=-1)  # (B, K, T)
    loss = (l1 - F.logsigmoid(cos).mean((0, 2))).mean()
    return loss, l1.detach(), cos.mean((0, 2)).detach()


# ----------------------------------------------------------------------------------------------------------------
# Distillation

class TargetBank:
    """--cache_targets: a fixed bank of crops, drawn once with seed 0 (the same for every later run and seed), and
    per teacher its target layers for every crop, float16 on disk (data/cache/), memory-mapped. A run on a bank
    draws its batches from the bank in its own seed's order and runs no teacher at all."""

    def __init__(self, cfg: "Config", data: str, pools: dict, n: int):
        crop_n = int(cfg.crop_s * tasks.SR)
        corpus = {k: [p.paths[0], p.paths[-1], len(p), sum(p.lengths)] for k, p in sorted(pools.items())}
        key = hashlib.sha256(json.dumps([data, crop_n, n, cfg.batch, corpus]).encode()).hexdigest()[:10]
        self.dir, self.pools, self.crop_n, self.targets = os.path.join(cfg.data_dir, "cache", f"{data}_{crop_n}_{n}_{key}"), pools, crop_n, {}
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, "crops.npy")
        if not os.path.exists(path):
            g = torch.Generator().manual_seed(0)
            specs = np.concatenate([draw_batch(pools, data, cfg.batch, crop_n, g) for _ in range(math.ceil(n / cfg.batch))])[:n]
            np.save(path + ".tmp.npy", specs)
            os.replace(path + ".tmp.npy", path)
        self.specs = np.load(path)  # (n, 3): kind, file, start

    def add_teacher(self, domain: str, teacher: Encoder, layers: list, device: str, batch: int) -> None:
        """Compute (once) and memory-map this teacher's targets for every crop: (n, K, T, Dt) float16."""
        path = os.path.join(self.dir, f"{domain}_{teacher.fingerprint}_{'-'.join(map(str, layers))}.npy")
        if not os.path.exists(path):
            T = conv_frames(self.crop_n)
            out = np.lib.format.open_memmap(path + ".tmp.npy", "w+", np.float16, (len(self.specs), len(layers), T, teacher.cfg.dim))
            t0 = time.time()
            for i in range(0, len(self.specs), batch):
                wav = read_batch(self.pools, self.specs[i:i + batch], self.crop_n).to(device)
                with torch.no_grad():
                    hidden = teacher(wav)
                out[i:i + batch] = torch.stack([hidden[j] for j in layers], 1).half().cpu().numpy()
                if time.time() - t0 > 30 and (i // batch) % 50 == 0:
                    print(f"  caching {domain} targets: {i + batch}/{len(self.specs)} crops, {time.time() - t0:.0f} s", flush=True)
            out.flush()
            del out
            os.replace(path + ".tmp.npy", path)  # only a complete cache gets the final name
            print(f"cached {domain} teacher targets of {len(self.specs)} crops in {path} ({time.time() - t0:.0f} s)", flush=True)
        self.targets[domain] = np.load(path, mmap_mode="r")

    def batch(self, idx: np.ndarray):
        """-> (wav (B, n), {domain: targets (B, K, T, Dt) float32})."""
        return (read_batch(self.pools, self.specs[idx], self.crop_n),
                {d: torch.from_numpy(t[idx]).float() for d, t in self.targets.items()})


def distributed() -> tuple:
    """(rank, world size) under torchrun (RANK, WORLD_SIZE set), with the process group started; else (0, 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


class Distiller(nn.Module):
    """Student backbone + one head set per teacher, one module so DDP can average their gradients."""

    def __init__(self, student: Encoder, heads: nn.ModuleDict):
        super().__init__()
        self.student, self.heads = student, heads

    def forward(self, wav, conv_grad_mult: float):
        top = self.student(wav, conv_grad_mult=conv_grad_mult)[-1]  # (B, T, D)
        return {d: h(top) for d, h in self.heads.items()}  # each (B, K, T, Dt)


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


def train(cfg: Config) -> dict:
    """Distil the student from theta0. Returns the final metrics; writes checkpoint.pt, log.jsonl, config.json.
    Under torchrun every rank draws the same global batch and takes its own slice (so N ranks see what one process
    would), DDP averages the gradients, and rank 0 alone logs and writes."""
    if cfg.domain not in ("speech", "music", "both"):
        raise ValueError(f"--domain must be 'speech', 'music' or 'both', got {cfg.domain!r}")
    data = cfg.data or {"speech": "speech", "music": "music", "both": "mix"}[cfg.domain]
    if data not in ("speech", "music", "mix"):
        raise ValueError(f"--data must be 'speech', 'music' or 'mix', got {data!r}")
    rank, world = distributed()
    if cfg.batch % world:
        raise ValueError(f"--batch {cfg.batch} does not split over {world} ranks; use a multiple of {world}")
    out_dir = cfg.out_dir or os.path.join("out", f"{cfg.domain}_{data}_s{cfg.seed}")
    device, amp = device_and_amp(cfg)
    if device == "cuda":
        device = f"cuda:{rank}" if world > 1 else device
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # TF32 for what bf16 leaves
    lead, domains = rank == 0, ["speech", "music"] if cfg.domain == "both" else [cfg.domain]
    if world > 1 and not lead:
        torch.distributed.barrier()  # wait while rank 0 makes whatever is missing (data, teachers, theta0, cache)
    if not (cfg.speech_dir and cfg.music_dir):  # the synthetic pools (and the teachers' data)
        tasks.ensure_data(cfg.data_dir)
    theta0, theta0_fp = get_theta0(cfg, device)
    teachers = {d: get_teacher(cfg, d, device) for d in domains}
    torch.manual_seed(1337)  # heads start the same in every run, like theta0 (the authors' seed)
    student = Encoder(EncoderConfig(**theta0["encoder_config"]))
    load_state(student, theta0["encoder"], cfg.init, "delete it and rerun --init_only")
    speech_fp = teachers["speech"].fingerprint if "speech" in teachers else read_encoder(cfg.teacher_speech)[2]
    if theta0.get("teacher_fingerprint") != speech_fp:
        raise ValueError(f"{cfg.init} was made from another speech teacher than {cfg.teacher_speech}; "
                         "delete it (or pass --init) and rerun with --init_only")
    heads = nn.ModuleDict({d: PredictionHeads(student.cfg.dim, t.cfg.dim, 3) for d, t in teachers.items()})
    model = Distiller(student, heads).to(device).train()
    student.mask_emb.requires_grad_(False)  # pretraining only; never used here (and DDP wants no idle parameter)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=1e-6)
    g = torch.Generator().manual_seed(cfg.seed)
    pools = {k: load_pool(cfg, k) for k in (["speech", "music"] if data == "mix" else [data])}
    crop_n = int(cfg.crop_s * tasks.SR)
    targets = {d: target_layers(t.cfg.layers) for d, t in teachers.items()}
    bank = None
    if cfg.cache_targets:
        bank = TargetBank(cfg, data, pools, cfg.cache_crops or cfg.steps * cfg.batch)
        for d in domains:
            bank.add_teacher(d, teachers[d], targets[d], device, cfg.batch)
        teachers = {}  # no teacher runs during a cached run
    if world > 1 and lead:
        torch.distributed.barrier()  # everything exists now: let the other ranks read it
    start_step, ckpt_path = 0, os.path.join(out_dir, "checkpoint.pt")
    if cfg.resume:
        ck = load_checkpoint(ckpt_path, "run without --resume")
        load_state(student, ck["encoder"], ckpt_path, "run without --resume")
        load_state(heads, ck["heads"], ckpt_path, "run without --resume")
        opt.load_state_dict(ck["optimizer"])
        g.set_state(ck["rng"])
        start_step = ck["step"]
    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if device.startswith("cuda") else None)
    forward = torch.compile(ddp) if cfg.compile else ddp
    if lead:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(dict(asdict(cfg), data=data, out_dir=out_dir, world_size=world), f, indent=1)
        print(f"distilling a {count_parameters(student) / 1e6:.2f}M-parameter student from {', '.join(domains)} "
              f"(target layers {targets}) on {data} audio, {cfg.steps} steps of {cfg.batch} x {cfg.crop_s} s"
              f"{f' over {world} ranks' if world > 1 else ''}, device {device}{' bf16' if amp else ''}, "
              f"{'cached targets, ' if bank else ''}theta0 {theta0_fp}", flush=True)

    def save(step, metrics):
        save_checkpoint(ckpt_path, encoder={k: v.cpu() for k, v in student.state_dict().items()},
                        heads={k: v.cpu() for k, v in heads.state_dict().items()}, optimizer=opt.state_dict(),
                        rng=g.get_state(), step=step, encoder_config=asdict(student.cfg), theta0_fingerprint=theta0_fp,
                        domain=cfg.domain, data=data, metrics=metrics, config=asdict(cfg))

    metrics, t0 = {}, time.time()
    log = open_log(os.path.join(out_dir, "log.jsonl"), start_step) if lead else None
    mine = slice(rank * cfg.batch // world, (rank + 1) * cfg.batch // world)  # this rank's part of every batch
    for step in range(start_step + 1, cfg.steps + 1):
        if bank is not None:
            wav, target = bank.batch(torch.randint(len(bank.specs), (cfg.batch,), generator=g).numpy()[mine])
        else:
            wav = read_batch(pools, draw_batch(pools, data, cfg.batch, crop_n, g)[mine], crop_n)  # (B, n)
        wav = wav.pin_memory().to(device, non_blocking=True) if device.startswith("cuda") else wav
        if bank is None:
            target = {}
            with torch.no_grad():  # frozen teachers, float32 (their targets are what the student must match)
                for d in domains:
                    hidden = teachers[d](wav)  # one forward pass, every layer
                    target[d] = torch.stack([hidden[i] for i in targets[d]], 1)  # (B, K, T, Dt)
        target = {d: t.to(device) for d, t in target.items()}
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.lr, cfg.warmup_frac)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=amp):
            preds = forward(wav, cfg.conv_grad_mult)
        loss, stats = 0.0, {}
        for d in domains:  # ensemble: one head set per teacher, losses summed with equal weights
            l, l1, cos = distill_loss(preds[d].float(), target[d])
            loss = loss + l
            stats[d] = dict(l1=[round(x, 4) for x in l1.tolist()], cos=[round(x, 4) for x in cos.tolist()])
        if not torch.isfinite(loss):  # stop before the update: checkpoint.pt still holds the last good state
            raise FloatingPointError(f"loss is {loss.item()} at step {step}; the last good checkpoint is {ckpt_path} "
                                     f"(continue with --resume after lowering --lr, or check the data)")
        opt.zero_grad(set_to_none=True)
        loss.backward()  # under DDP the gradients arrive averaged over the ranks
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        if lead and (step % cfg.log_every == 0 or step == cfg.steps):
            el = time.time() - t0
            done = step - start_step
            metrics = dict(step=step, loss=round(loss.item(), 4), heads=stats, lr=opt.param_groups[0]["lr"],
                           grad_norm=round(float(grad_norm), 3), ms_per_step=round(el / done * 1000, 1),
                           audio_s_per_s=round(done * cfg.batch * cfg.crop_s / el, 1))
            log.write(json.dumps(metrics) + "\n")
            log.flush()
            heads_txt = " ".join(f"{d}: L1 {'/'.join(f'{x:.3f}' for x in s['l1'])} cos {'/'.join(f'{x:.3f}' for x in s['cos'])}"
                                 for d, s in stats.items())
            print(f"step {step}/{cfg.steps} loss {loss.item():.4f} | {heads_txt} | lr {metrics['lr']:.2e} "
                  f"{metrics['ms_per_step']:.0f} ms/step {metrics['audio_s_per_s']:.0f} audio-s/s "
                  f"ETA {el / done * (cfg.steps - step) / 60:.1f} min", flush=True)
        if lead and (step % cfg.ckpt_every == 0 or step == cfg.steps):
            save(step, metrics)
    if not lead:
        return {}
    log.close()
    # the cost of this run (merge.py's cost table): teacher forward passes and peak memory of the process
    metrics["teacher_clip_forwards"] = 0 if bank else (cfg.steps - start_step) * cfg.batch * len(domains)
    metrics["wall_s"] = round(time.time() - t0, 1)
    if device.startswith("cuda"):
        metrics["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20)
    elif resource is not None:  # ru_maxrss is in KiB on Linux
        metrics["peak_mem_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    student_path = os.path.join(out_dir, "student.pt")
    state = {k: v.cpu() for k, v in student.state_dict().items()}
    save_checkpoint(student_path, encoder=state, encoder_config=asdict(student.cfg), theta0_fingerprint=theta0_fp,
                    domain=cfg.domain, data=data, steps=cfg.steps, metrics=metrics, seed=cfg.seed)
    print(f"done: {student_path} (final distillation loss {metrics.get('loss', float('nan')):.4f}, "
          f"{time.time() - t0:.0f} s)", flush=True)
    return dict(metrics, student=student_path, seconds=time.time() - t0)


# ----------------------------------------------------------------------------------------------------------------
# Benchmark (--bench): the current config's student training step and teacher forward, against this machine's
# matmul peak and, where transformers is installed, against its HubertModel built with the same sizes

def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_time(fn, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def training_step(backbone_forward, params: list, heads: nn.Module, wav, target, amp: bool, device: str):
    """One distillation step (forward, loss, backward, clip, AdamW) as a closure, for timing."""
    opt = torch.optim.AdamW(params + list(heads.parameters()), lr=1e-4, betas=(0.9, 0.98), eps=1e-6)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            pred = heads(backbone_forward(wav))
        loss = distill_loss(pred.float(), target)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sync(device)
    return step


def bench(cfg: Config, reps: int = 10) -> float:
    """Prints step times, audio-seconds/s and FLOP/s; returns the speed ratio vs transformers (0 if absent)."""
    from torch.utils.flop_counter import FlopCounterMode
    device, amp = device_and_amp(cfg)
    t_cfg = teacher_config(cfg)
    s_cfg = student_config(t_cfg)
    torch.manual_seed(0)
    student, teacher = Encoder(s_cfg).to(device).train(), Encoder(t_cfg).to(device).eval().requires_grad_(False)
    wav = torch.randn(cfg.batch, int(cfg.crop_s * tasks.SR), device=device)  # (B, n)
    target = torch.randn(cfg.batch, 3, conv_frames(wav.shape[1]), t_cfg.dim, device=device)  # (B, K, T, Dt)
    audio_s = cfg.batch * cfg.crop_s
    dtype = torch.bfloat16 if amp else torch.float32
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    peak = 2 * 2048 ** 3 / median_time(lambda: (a @ a, sync(device)), 5)
    print(f"bench: {device}, {torch.get_num_threads()} threads, {'bf16' if amp else 'fp32'}; batch {cfg.batch} x "
          f"{cfg.crop_s} s; student {count_parameters(student) / 1e6:.2f}M, teacher {count_parameters(teacher) / 1e6:.2f}M "
          f"parameters; 2048^3 matmul peak {peak / 1e9:.0f} GFLOP/s", flush=True)
    ours = training_step(lambda w: student(w, conv_grad_mult=cfg.conv_grad_mult)[-1], list(student.parameters()),
                         PredictionHeads(s_cfg.dim, t_cfg.dim, 3).to(device), wav, target, amp, device)
    with FlopCounterMode(display=False) as counter:
        ours()
    step_flops = counter.get_total_flops()

    def teacher_forward():
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            teacher(wav)
        sync(device)
    with FlopCounterMode(display=False) as counter:
        teacher_forward()
    teacher_flops = counter.get_total_flops()
    theirs = None
    try:
        import transformers
        hf_cfg = transformers.HubertConfig(
            hidden_size=s_cfg.dim, num_hidden_layers=s_cfg.layers, num_attention_heads=s_cfg.heads,
            intermediate_size=s_cfg.ffn, conv_dim=(s_cfg.conv_channels,) * 7, num_conv_pos_embeddings=s_cfg.pos_kernel,
            num_conv_pos_embedding_groups=s_cfg.pos_groups, feat_proj_layer_norm=s_cfg.feature_layernorm,
            hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
            mask_time_prob=0.0, attn_implementation="sdpa")
        hf = transformers.HubertModel(hf_cfg).to(device).train()
        theirs = training_step(lambda w: hf(w).last_hidden_state, list(hf.parameters()),
                               PredictionHeads(s_cfg.dim, t_cfg.dim, 3).to(device), wav, target, amp, device)
    except ImportError:
        print("bench: transformers not installed, no reference comparison (pip install -r tests/requirements.txt)")
    times = {"ours": [], "theirs": [], "teacher": []}
    for fn in [ours, theirs, teacher_forward] * 2:  # warm-up
        if fn is not None:
            fn()
    for _ in range(reps):  # interleaved, so a busy moment of the machine hits both alike
        for name, fn in (("ours", ours), ("theirs", theirs), ("teacher", teacher_forward)):
            if fn is not None:
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items() if v}
    print(f"bench: student step {med['ours'] * 1e3:.1f} ms = {audio_s / med['ours']:.0f} audio-s/s, "
          f"{step_flops / 1e9:.1f} GFLOP/step = {step_flops / med['ours'] / 1e9:.1f} GFLOP/s "
          f"({100 * step_flops / med['ours'] / peak:.0f}% of the matmul peak)")
    print(f"bench: teacher forward {med['teacher'] * 1e3:.1f} ms = {audio_s / med['teacher']:.0f} audio-s/s, "
          f"{teacher_flops / 1e9:.1f} GFLOP = {teacher_flops / med['teacher'] / 1e9:.1f} GFLOP/s "
          f"({100 * teacher_flops / med['teacher'] / peak:.0f}% of the matmul peak)")
    if "theirs" not in med:
        return 0.0
    ratio = med["theirs"] / med["ours"]
    print(f"bench: transformers HubertModel step {med['theirs'] * 1e3:.1f} ms (same sizes, heads, loss, optimizer; "
          f"median of {reps})")
    print(f"speed_ratio_vs_transformers {ratio:.2f}", flush=True)
    return ratio


# --preset paper: DistilHuBERT's recipe as the paper's students used it (PAPER.md Sec. 4), for a GPU and real
# teachers (--teacher_speech hubert_base_ls960.pt --teacher_music MERT-v0-public/). Explicit flags still win.
PRESETS = {"paper": dict(steps=200_000, batch=24, crop_s=15.6, lr=2e-4, warmup_frac=0.07, conv_grad_mult=0.1,
                         teacher_layers=12, dim=768, conv_channels=512, log_every=500, ckpt_every=5000)}


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
    tasks.check_config(cfg, ranges=dict(steps=(1, None), batch=(1, None), crop_s=(tasks.WIN / tasks.SR, None), lr=(0, None),
                                        warmup_frac=(0, 1), conv_grad_mult=(0, None), teacher_steps=(1, None),
                                        music_teacher_steps=(1, None), front_end_steps=(0, None), speech_iterations=(1, 3),
                                        teacher_layers=(1, None), dim=(1, None), conv_channels=(1, None),
                                        music_conv_channels=(0, None), threads=(0, None), log_every=(1, None),
                                        ckpt_every=(1, None), cache_crops=(0, None)),
                       choices=dict(domain=("speech", "music", "both"), data=("", "speech", "music", "mix"),
                                    bf16=("auto", "on", "off"), pretrain=("", "speech", "music"), preset=("", *PRESETS)))


def main(argv=None):
    cfg = parse_args(argv)
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
            print(f"theta0 {get_theta0(cfg, device_and_amp(cfg)[0])[1]} at {cfg.init}")
        else:
            train(cfg)
    except (ValueError, FloatingPointError, OSError, KeyboardInterrupt) as e:
        sys.exit(tasks.one_line(e))


if __name__ == "__main__":
    main()
