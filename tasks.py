"""The synthetic world of this reproduction: speech and music corpora, labelled probe tasks, classical features.

The paper (Ritter-Gutierrez et al., Interspeech 2025) distils on LibriSpeech and probes on SUPERB (speech) and
MARBLE (music) tasks. We cannot ship those, so this file *makes* stand-ins from numpy alone, deterministically:

  speech  a source-filter voice: glottal pulses with an f0 contour through formant resonances that glide between
          phone targets, plus frication, bursts and aspiration; 21 phones, 30 words, speakers that differ in f0,
          vocal-tract length, breathiness, tilt and rate, 4 speaking styles (the emotion analogue). It also sings.
  music   10 instruments from different synthesis families and a drum kit; songs in a key in 6 styles.
  sounds  12 environmental sound classes (rain, wind, engine, siren, bird, knock, clock, footsteps, pouring water,
          crowd babble, breaking glass, thunder), each a synthesis family of its own (the ESC-50 analogue).

Filters run frame-wise in the STFT domain (overlap-add), never by a per-sample loop, so the default corpora
take about a minute on 2 cores. Outputs under data/ (data/README.md): pool_speech/, pool_music/ (unlabelled
distillation audio), probe/*.wav and probe/<TASK>.csv (path,label,split; PR has 50 Hz phone labels in `frames`).
The bottom of the story holds what every other script shares: the encoders' frame grid, the classical features
(log-mel, MFCC, a CQT-like semitone spectrum, chroma) and, after the plumbing banner, the audio reader and the CLI.

Usage:  python tasks.py                 # make everything (skips what exists for the same config)
        python tasks.py --pool_minutes 60 --workers 2
"""
import argparse
import csv
import functools
import inspect
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import soundfile as sf
import torch

# DEVIATION: synthetic corpora instead of LibriSpeech, Music4All and the SUPERB/MARBLE sets: everything must run on
# a laptop CPU with no download.
SR = 16000  # Hz; HuBERT Base and MERT-v0-public both take 16 kHz
HOP = 320  # samples per encoder frame (50 Hz)
WIN = 400  # receptive field of the conv feature extractor, in samples
VERSION = 3  # of the generators; bump it when a change alters the audio, so old data/ folders are remade


@dataclass
class Config:
    # where
    data_dir: str = "data"  # where corpora and probe sets are written
    seed: int = 0  # every clip is a pure function of (seed, set, index)
    # distillation pools
    pool_minutes: float = 30.0  # minutes of unlabelled audio per pool (speech, music)
    pool_clip_s: float = 8.0  # length of one pool file, seconds
    # probe sets
    speakers: int = 36  # probe speakers: 20 train / 8 valid / 8 test for the unseen-speaker tasks
    ks_reps: int = 2  # repetitions of each keyword class per speaker (KS)
    ic_reps: int = 1  # repetitions of each intent per speaker (IC, SID, ER, PR share these clips)
    singers: int = 20  # singers for SingerID and Technique (12 / 4 / 4 for Technique)
    sing_reps: int = 4  # clips per singer and technique
    presets: int = 5  # renderings per instrument: 3 train / 1 valid / 1 test (Instrument, Pitch)
    notes_per_preset: int = 24  # pitches each preset plays, out of the 48 MIDI notes 36..83 (4 octaves)
    songs_per_style: int = 50  # Genre clips per style
    env_variants: int = 5  # variants per sound class: 3 train / 1 valid / 1 test (ESC)
    env_reps: int = 6  # renderings of each variant (ESC)
    test_scale: int = 2  # test items = this x the split's share (test-only extras; train and valid do not change)
    # machine
    workers: int = 2  # processes used for generation


def n_frames(n_samples: int) -> int:
    """The encoders' frame grid: frames of the conv feature extractor for n_samples, floor((n - 400) / 320) + 1;
    frame i covers samples [320 i, 320 i + 400), centred on 320 i + 200."""
    return max(0, (n_samples - WIN) // HOP + 1)


def normalize(wav: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per clip. Every encoder and the logmel baseline see audio this way, so that the
    level of a recording (which differs wildly between real sources) carries no information."""
    wav = wav - wav.mean()
    return (wav / max(float(wav.std()), 1e-8)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Filtering in the STFT domain: numpy has no recursive filter, so time-varying filters are applied per 8 ms frame

N_FFT, STEP = 512, 128  # analysis frame and hop of the synthesis STFT (32 ms, 8 ms)
FREQS = np.fft.rfftfreq(N_FFT, 1 / SR)  # (257,) Hz
_WINDOW = np.sqrt(np.hanning(N_FFT + 1)[:-1])  # periodic sqrt-Hann; analysis x synthesis sums to 2 at hop N/4


def stft_filter(sources: list, envs: list) -> np.ndarray:
    """sum_i ISTFT(STFT(sources[i]) * envs[i]). sources: (n,) each; envs: (n // STEP + 1, 257) magnitude
    responses, row j centred on sample j * STEP. Returns (n,)."""
    n = len(sources[0])
    F = n // STEP + 1
    Y = 0
    for x, env in zip(sources, envs):
        assert env.shape == (F, len(FREQS)), (env.shape, F)
        xp = np.pad(x, (N_FFT // 2, N_FFT // 2 + F * STEP - n))  # (F * STEP + N_FFT,)
        frames = np.lib.stride_tricks.sliding_window_view(xp, N_FFT)[::STEP][:F] * _WINDOW  # (F, N_FFT)
        Y = Y + np.fft.rfft(frames, axis=1) * env
    y = np.fft.irfft(Y, n=N_FFT, axis=1) * _WINDOW  # (F, N_FFT)
    out = np.zeros((F + 3) * STEP)
    for j in range(N_FFT // STEP):  # overlap-add: frame f's j-th quarter lands at (f + j) * STEP
        out[j * STEP:j * STEP + F * STEP] += y[:, j * STEP:(j + 1) * STEP].reshape(-1)
    return out[N_FFT // 2:N_FFT // 2 + n] / 2.0


def smooth(track: np.ndarray, width: int) -> np.ndarray:
    """Moving average along axis 0 (frames), edges held: how targets become coarticulated trajectories."""
    if width <= 1:
        return track
    k = np.ones(width) / width
    pad = np.pad(track, [(width // 2, width - 1 - width // 2)] + [(0, 0)] * (track.ndim - 1), mode="edge")
    return np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, pad)


def room(rng, wav: np.ndarray, snr_db=(15, 35), rt60_s=(0.1, 0.4), wet=(0.05, 0.3)) -> np.ndarray:
    """Mild reverberation (exponentially decaying noise impulse response) and coloured background noise."""
    rt60 = rng.uniform(*rt60_s)
    t = np.arange(int(rt60 * SR)) / SR
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir = ir / np.sqrt((ir ** 2).sum())
    n = len(wav)
    L = 1 << int(np.ceil(np.log2(n + len(ir))))  # a power of two keeps the FFTs fast
    wet_sig = np.fft.irfft(np.fft.rfft(wav, L) * np.fft.rfft(ir, L), L)[:n]
    out = wav + rng.uniform(*wet) * wet_sig * np.sqrt((wav ** 2).mean() / max((wet_sig ** 2).mean(), 1e-12))
    colour = (1 + np.arange(L // 2 + 1)) ** -rng.uniform(0.3, 1.0)  # pinkish to brownish
    noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(L)) * colour, L)[:n]
    snr = rng.uniform(*snr_db)
    noise *= np.sqrt((out ** 2).mean() / max((noise ** 2).mean(), 1e-12) / 10 ** (snr / 10))
    return out + noise


# ----------------------------------------------------------------------------------------------------------------
# Speech: phones, lexicon, speakers, styles, and the source-filter voice

# name: kind, (F1, F2, F3) target or locus in Hz for an adult male (scaled per speaker), extras. Formant values of
# vowels after Peterson & Barney; consonant loci labial ~900, alveolar ~1700, velar ~2200 Hz.
PHONES = {
    "a": ("vowel", (730, 1090, 2440)), "i": ("vowel", (270, 2290, 3010)), "u": ("vowel", (300, 870, 2240)),
    "e": ("vowel", (530, 1840, 2480)), "o": ("vowel", (570, 840, 2410)), "ae": ("vowel", (660, 1720, 2410)),
    "er": ("vowel", (490, 1350, 1690)),
    "m": ("nasal", (250, 1100, 2300), 1000), "n": ("nasal", (250, 1500, 2500), 1800),  # extra: anti-resonance Hz
    "s": ("fric", (300, 1700, 2600), 6500, 0.5, 0), "sh": ("fric", (300, 1900, 2500), 3000, 0.6, 0),
    "f": ("fric", (300, 900, 2300), 5000, 2.0, 0), "z": ("fric", (300, 1700, 2600), 6500, 0.5, 1),
    "v": ("fric", (300, 900, 2300), 5000, 2.0, 1), "h": ("asp", None),  # fric extra: centre Hz, width oct, voiced
    "p": ("stop", (300, 900, 2300), 900, 1.5, 0), "t": ("stop", (300, 1700, 2600), 4500, 1.0, 0),
    "k": ("stop", (300, 2200, 2600), 2000, 0.5, 0), "b": ("stop", (300, 900, 2300), 900, 1.5, 1),
    "d": ("stop", (300, 1700, 2600), 4500, 1.0, 1), "g": ("stop", (300, 2200, 2600), 2000, 0.5, 1),
}

LEXICON = {  # 30 words; KS keywords first, then IC actions and objects, then fillers
    "go": "g o", "stop": "s t a p", "on": "a n", "off": "o f", "back": "b ae k", "see": "s i", "moon": "m u n",
    "fish": "f i sh", "vase": "v e z", "dig": "d i g",
    "open": "o p e n", "shut": "sh a t", "heat": "h i t", "boost": "b u s t",
    "door": "d o er", "fan": "f ae n", "music": "m u z i k", "gas": "g ae s",
    "please": "p i z", "the": "d er", "top": "t a p", "sea": "s e", "bag": "b ae g", "man": "m ae n",
    "sun": "s a n", "keep": "k i p", "tip": "t i p", "nose": "n o z", "vine": "v a n", "dish": "d i sh",
}
KEYWORDS = list(LEXICON)[:10]
ACTIONS, OBJECTS = ["open", "shut", "heat", "boost"], ["door", "fan", "music", "gas"]  # with fillers: every phone
OTHER_WORDS = list(LEXICON)[20:]  # KS "unknown" class; none of them is a keyword
KS_CLASSES = KEYWORDS + ["_unknown_", "_silence_"]  # 12 classes as in Speech Commands v0.01 (SUPERB KS)

# speaking styles, the emotion analogue (SUPERB ER): f0 factor, f0-range factor, rate factor, tilt dB/oct shift,
# breathiness shift, open-quotient shift (pressed voice = smaller open quotient = brighter)
STYLES = {
    "neutral": (1.00, 1.0, 1.00, 0.0, 0.00, 0.00),
    "happy": (1.18, 1.7, 1.10, 1.5, 0.00, -0.05),
    "sad": (0.90, 0.5, 0.80, -3.0, 0.15, 0.10),
    "angry": (1.10, 1.3, 1.15, 3.0, -0.05, -0.15),
}
TECHNIQUES = ["straight", "vibrato", "breathy", "trill", "glide"]  # VocalSet analogue


def make_speaker(rng) -> dict:
    """One voice. f0 and vocal-tract length are correlated (larger speakers are lower), as in real voices."""
    size = rng.uniform(0, 1)  # 0 = small (child/female-like), 1 = large
    return dict(
        f0=float(np.exp(np.log(250) - size * np.log(250 / 95) + rng.normal(0, 0.08))),
        f0_range=rng.uniform(1.0, 3.5),  # semitones of accent excursion
        vtl=float(1.22 - 0.3 * size + rng.normal(0, 0.03)),  # formant scale factor
        formant_offsets=np.exp(rng.normal(0, 0.05, 3)),  # individual vowel colour
        breath=rng.uniform(0.0, 0.35), tilt=rng.uniform(-3, 3), rate=rng.uniform(0.8, 1.25),
        jitter=rng.uniform(0.003, 0.02), shimmer=rng.uniform(0.02, 0.1), oq=rng.uniform(0.45, 0.7),
        vibrato_hz=rng.uniform(4.5, 6.5),
    )


def phone_segments(rng, words: list, rate: float):
    """Words -> synthesis segments (params, n_samples) and label spans (label, n_samples). A stop is three
    segments (closure, burst, aspiration) but one label."""
    segs, spans = [], []

    def seg(kind_params, ms):
        n = int(ms / rate * SR / 1000)
        segs.append((kind_params, n))
        return n

    lead = seg(dict(F=None), rng.uniform(100, 300))
    spans.append(("sil", lead))
    for w_i, word in enumerate(words):
        phones = LEXICON[word].split()
        for p_i, ph in enumerate(phones):
            kind, F = PHONES[ph][0], PHONES[ph][1]
            nxt = next((PHONES[q][1] for q in phones[p_i + 1:] if PHONES[q][0] == "vowel"), (500, 1500, 2500))
            if kind == "vowel":
                n = seg(dict(F=F, voice=1.0), rng.uniform(90, 160))
            elif kind == "nasal":
                n = seg(dict(F=F, voice=0.5, zero=PHONES[ph][2]), rng.uniform(60, 90))
            elif kind == "fric":
                _, F, fc, fw, voiced = PHONES[ph]
                n = seg(dict(F=F, voice=0.3 * voiced, fric=0.35 if fw < 1 else 0.12, fc=fc, fw=fw),
                        rng.uniform(80, 120))
            elif kind == "asp":
                n = seg(dict(F=nxt, asp=0.5), rng.uniform(60, 90))
            else:  # stop: closure (silent or a voice bar), burst, aspiration with the next vowel's formants
                _, F, fc, fw, voiced = PHONES[ph]
                n = seg(dict(F=F, voice=0.06 * voiced), rng.uniform(45, 70))
                n += seg(dict(F=F, fric=0.6, fc=fc, fw=fw), rng.uniform(8, 15))
                n += seg(dict(F=nxt, asp=0.35, voice=0.4 * voiced),
                         rng.uniform(10, 20) if voiced else rng.uniform(30, 50))
            spans.append((ph, n))
        if w_i < len(words) - 1 and rng.uniform() < 0.5:
            spans.append(("sil", seg(dict(F=None), rng.uniform(30, 120))))
    spans.append(("sil", seg(dict(F=None), rng.uniform(100, 300))))
    return segs, spans


def frame_labels(spans: list, n_samples: int) -> list:
    """50 Hz labels: frame i gets the phone at the centre of its receptive field, sample 320 i + 200."""
    ends = np.cumsum([n for _, n in spans])
    centres = np.arange(n_frames(n_samples)) * HOP + WIN // 2
    idx = np.minimum(np.searchsorted(ends, centres, side="right"), len(spans) - 1)
    return [spans[i][0] for i in idx]


def resonances(F: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Magnitude of a cascade of 2-pole resonators (a Klatt-style cascade formant filter), unity at 0 Hz.
    F, B: (T, K) Hz -> (T, 257)."""
    f = FREQS[None, None, :]
    F, B = F[:, :, None], B[:, :, None]
    return np.prod(F ** 2 / np.sqrt((F ** 2 - f ** 2) ** 2 + (B * f) ** 2), axis=1)


def render_voice(rng, spk: dict, segs: list, f0_frames: np.ndarray, breath: float, tilt: float, oq: float):
    """Source-filter synthesis. segs: [(params, n_samples)]; f0_frames: (T,) Hz per 8 ms frame, T = n // STEP + 1."""
    n = sum(m for _, m in segs)
    T = n // STEP + 1
    assert len(f0_frames) == T, (len(f0_frames), T)
    # per-frame targets from the segments: formants, voice, aspiration, frication and its band, nasal zero
    cols = np.zeros((T, 9))
    cols[:, :3] = (500, 1500, 2500)
    start = 0
    for p, m in segs:
        a, b = start // STEP, min(T, (start + m) // STEP + 1)
        if p.get("F") is not None:
            cols[a:b, :3] = p["F"]
        cols[a:b, 3:9] = (p.get("voice", 0), p.get("asp", 0), p.get("fric", 0), p.get("fc", 4000), p.get("fw", 1),
                          p.get("zero", 0))
        start += m
    formants = smooth(cols[:, :3], 7) * spk["vtl"] * spk["formant_offsets"]  # 56 ms glides = coarticulation
    gains = smooth(cols[:, 3:6], 2)
    formants = np.concatenate([formants, np.full((T, 1), 3500 * spk["vtl"])], 1)  # fixed F4
    bandwidths = np.array([70, 100, 150, 250]) * (1 + 2 * breath) ** 0.5
    tract = resonances(formants, np.broadcast_to(bandwidths, formants.shape))  # (T, 257)
    zero = cols[:, 8:9]
    tract = tract * (1 - 0.9 * (zero > 0) * np.exp(-((FREQS - zero * spk["vtl"]) / 200.0) ** 2))
    tilt_gain = 10 ** (tilt * np.log2(np.maximum(FREQS, 60) / 500) / 20)  # (257,)
    octaves = np.log2(np.maximum(FREQS, 60) / (cols[:, 6:7] * spk["vtl"] ** 0.5))
    fric_shape = np.exp(-0.5 * (octaves / cols[:, 7:8]) ** 2)
    # glottal source: raised-cosine flow pulses, differentiated (lip radiation); jitter and shimmer per frame
    f0 = np.interp(np.arange(n), np.arange(T) * STEP, f0_frames * (1 + spk["jitter"] * rng.standard_normal(T)))
    phase = np.cumsum(f0 / SR) % 1.0
    rise, fall = 0.6 * oq, 0.4 * oq  # Rosenberg pulse: smooth opening, abrupt closure (-12 dB/oct flow)
    flow = np.where(phase < rise, 0.5 - 0.5 * np.cos(np.pi * phase / rise),
                    np.where(phase < oq, np.cos(0.5 * np.pi * (phase - rise) / fall), 0.0))
    pulse = np.diff(flow, prepend=0.0) * SR / f0.mean()  # lip radiation: +6 dB/oct
    noise = rng.standard_normal(n)
    src = pulse * np.interp(np.arange(n), np.arange(T) * STEP, 1 + spk["shimmer"] * rng.standard_normal(T))
    src = src + 3 * breath * noise * (0.3 + flow)
    voice_env = gains[:, 0:1] * tract * tilt_gain
    asp_env = gains[:, 1:2] * tract * 0.4
    fric_env = gains[:, 2:3] * fric_shape * 1.5
    return stft_filter([src, noise, rng.standard_normal(n)], [voice_env, asp_env, fric_env])


def speech_f0(rng, spk: dict, style: tuple, T: int, accents: int) -> np.ndarray:
    """Speech intonation per 8 ms frame: speaker mean x style, declination, random accents, slow drift. (T,) Hz."""
    t = np.arange(T) / T
    st = -2.0 * t  # declination, semitones
    for c in rng.uniform(0.05, 0.9, size=accents):
        bump = np.exp(-0.5 * ((t - c) * T * STEP / SR / 0.08) ** 2)
        st = st + rng.uniform(0.3, 1) * spk["f0_range"] * style[1] * bump
    st = st + smooth(rng.standard_normal(T), 25) * 1.5
    return spk["f0"] * style[0] * 2 ** (st / 12)


def speak(rng, spk: dict, style_name: str, words: list, clean: bool = False):
    """A spoken utterance -> (wav (n,), 50 Hz phone labels)."""
    style = STYLES[style_name]
    segs, spans = phone_segments(rng, words, spk["rate"] * style[2])
    n = sum(m for _, m in segs)
    f0 = speech_f0(rng, spk, style, n // STEP + 1, accents=len(words))
    wav = render_voice(rng, spk, segs, f0, breath=max(0.0, spk["breath"] + style[4]), tilt=spk["tilt"] + style[3],
                       oq=spk["oq"] + style[5])
    return (wav if clean else room(rng, wav)), frame_labels(spans, n)


def sing(rng, spk: dict, technique: str, midi: float, seconds: float) -> np.ndarray:
    """A sung vowel on a note (VocalSet analogue), with one of TECHNIQUES."""
    vowel = ["a", "e", "i", "o", "u"][rng.integers(5)]
    segs = [(dict(F=None), int(0.1 * SR)), (dict(F=PHONES[vowel][1], voice=1.0), int((seconds - 0.2) * SR)),
            (dict(F=None), int(0.1 * SR))]
    T = sum(m for _, m in segs) // STEP + 1
    t = np.arange(T) * STEP / SR
    st = np.full(T, float(midi))
    if technique == "vibrato":
        st += rng.uniform(0.4, 0.8) * np.sin(2 * np.pi * spk["vibrato_hz"] * t)
    elif technique == "trill":
        st += rng.choice([1.0, 2.0]) * (np.sin(2 * np.pi * rng.uniform(5, 7) * t) > 0)
    elif technique == "glide":
        st += rng.choice([-1, 1]) * rng.uniform(3, 7) * np.clip((t - 0.3) / (seconds - 0.7), 0, 1)
    st = smooth(st, 3) + 0.1 * np.sin(2 * np.pi * 0.7 * t)  # slight drift even when straight
    breath = spk["breath"] + (0.6 if technique == "breathy" else 0.0)
    wav = render_voice(rng, spk, segs, 440 * 2 ** ((st - 69) / 12), breath=breath,
                       tilt=spk["tilt"] - 3 * (technique == "breathy"), oq=spk["oq"] + 0.1 * (technique == "breathy"))
    return room(rng, wav, snr_db=(20, 40))


# ----------------------------------------------------------------------------------------------------------------
# Music: instruments (each a function of an rng-drawn preset), drums, and songs in a key

INSTRUMENTS = ["flute", "pluck", "piano", "epiano", "bowed", "reed", "organ", "brass", "marimba", "bell"]
TABLE = 2048  # wavetable length


def envelope(n: int, attack: float, release: float, decay: float = 0.0) -> np.ndarray:
    """Linear attack, exponential decay (time constant `decay` s, 0 = sustain), linear release at the end."""
    t = np.arange(n) / SR
    env = np.minimum(1.0, t / max(attack, 1e-3))
    if decay > 0:
        env = env * np.exp(-np.maximum(t - attack, 0) / decay)
    return env * np.clip((n / SR - t) / max(release, 1e-3), 0, 1)


def wavetable_osc(amps: np.ndarray, f0: np.ndarray) -> np.ndarray:
    """Additive tone with harmonic amplitudes `amps` (k = 1..K), band-limited to Nyquist at the highest f0.
    f0: (n,) Hz per sample -> (n,). One table lookup per sample, whatever K is."""
    k = np.arange(1, len(amps) + 1)
    spec = np.zeros(TABLE // 2 + 1, dtype=complex)
    spec[k] = np.where(k * f0.max() < 0.45 * SR, amps, 0.0)
    table = np.fft.irfft(spec * 1j, TABLE) * TABLE / 2
    table = np.append(table, table[0])
    pos = (np.cumsum(f0 / SR) % 1.0) * TABLE
    i = pos.astype(int)
    frac = pos - i
    return table[i] * (1 - frac) + table[i + 1] * frac


def karplus_strong(rng, f0: float, n: int, bright: float, decay: float) -> np.ndarray:
    """Plucked string: y[t] = d (y[t-P] + y[t-P-1]) / 2, computed a period at a time (each block only needs the
    previous ones), at an integer period P, then resampled to the exact pitch."""
    P = int(SR / f0)
    m = int(n * P * f0 / SR) + P + 2
    y = np.zeros(m)
    burst = rng.standard_normal(P)
    y[:P] = bright * burst + (1 - bright) * np.convolve(burst, np.ones(4) / 4, mode="same")
    y[P] = y[0]
    d = 0.5 * decay ** (1.0 / max(f0 / 100.0, 0.5))
    for s in range(P + 1, m, P):
        e = min(s + P, m)
        y[s:e] = d * (y[s - P:e - P] + y[s - P - 1:e - P - 1])
    return np.interp(np.arange(n) * (P * f0 / SR), np.arange(m), y)


def make_preset(rng, inst: str) -> dict:
    """One rendering of an instrument: timbre parameters drawn around the family's values."""
    j = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    return dict(inst=inst, tilt=j(0.8, 1.6), attack=j(0.005, 0.03), decay=j(0.4, 1.5), vib_hz=j(4.5, 6.5),
                vib=j(0.002, 0.006), bright=j(0.3, 0.9), inharm=j(1e-4, 6e-4), ratio=j(1.3, 3.6),
                index=j(1.0, 4.0), amps=np.exp(rng.normal(0, 0.35, 16)), noise=j(0.01, 0.05))


def render_note(rng, pre: dict, midi: float, seconds: float, vel: float = 1.0) -> np.ndarray:
    """One note of preset `pre` at MIDI pitch `midi`, `seconds` long (release included) -> (n,)."""
    n = int(seconds * SR)
    f = 440.0 * 2 ** ((midi - 69) / 12)
    t = np.arange(n) / SR
    inst, a, k = pre["inst"], pre["amps"], np.arange(1, 17)
    vib = 1 + pre["vib"] * np.sin(2 * np.pi * pre["vib_hz"] * t) * np.minimum(1, t / 0.3)
    if inst == "flute":
        y = wavetable_osc(a[:4] * [1, 0.3, 0.12, 0.05], f * vib) * envelope(n, 0.08, 0.08)
        y += pre["noise"] * 3 * np.diff(rng.standard_normal(n + 1)) * envelope(n, 0.05, 0.08)
    elif inst == "pluck":
        y = karplus_strong(rng, f, n, pre["bright"], 0.995 + 0.004 * pre["bright"]) * envelope(n, 0.002, 0.05)
    elif inst == "piano":  # inharmonic partials f_k = k f sqrt(1 + B k^2), higher ones die faster
        K = int(min(12, 0.45 * SR / f / 1.1))
        kk = np.arange(1, K + 1)[:, None]
        fk = kk * f * np.sqrt(1 + pre["inharm"] * kk ** 2)
        decay = np.exp(-t * (1 + 0.6 * kk) / (pre["decay"] * (261 / f) ** 0.5))
        parts = a[:K, None] * kk ** -pre["tilt"] * np.sin(2 * np.pi * fk * t) * decay
        y = parts.sum(0) * envelope(n, 0.003, 0.05)
    elif inst == "epiano":  # FM, modulator at the carrier frequency, index decaying
        idx = pre["index"] * np.exp(-t / 0.3) + 0.3
        y = np.sin(2 * np.pi * f * t + idx * np.sin(2 * np.pi * f * t)) * envelope(n, 0.003, 0.05, pre["decay"])
    elif inst == "bell":  # FM with an inharmonic ratio
        idx = pre["index"] * np.exp(-t / 0.8)
        y = np.sin(2 * np.pi * f * t + idx * np.sin(2 * np.pi * f * pre["ratio"] * t))
        y = y * envelope(n, 0.002, 0.05, 2 * pre["decay"])
    elif inst == "bowed":
        y = wavetable_osc(a * k ** -pre["tilt"], f * (1 + 2.5 * (vib - 1))) * envelope(n, 0.15, 0.12)
        y += pre["noise"] * rng.standard_normal(n) * envelope(n, 0.15, 0.12)
    elif inst == "reed":  # odd harmonics
        y = wavetable_osc(a * k ** -pre["tilt"] * np.where(k % 2 == 1, 1.0, 0.08), np.full(n, f))
        y = y * envelope(n, 0.04, 0.06)
    elif inst == "organ":  # drawbars
        y = wavetable_osc(a * np.isin(k, [1, 2, 3, 4, 6, 8]) * np.exp(-0.15 * k), np.full(n, f))
        y = y * envelope(n, 0.01, 0.02)
    elif inst == "brass":  # bright attack settling to a darker tone, slight scoop up to pitch
        scoop = f * 2 ** (-0.4 * np.exp(-t / 0.04) / 12)
        bright = np.exp(-t / 0.15)
        dark = wavetable_osc(a * k ** -(1.5 + pre["tilt"]), scoop)
        y = (bright * wavetable_osc(a * k ** -1.0, scoop) + (1 - bright) * dark) * envelope(n, 0.03, 0.08)
    elif inst == "marimba":
        y = sum(amp * np.sin(2 * np.pi * f * r * t) * np.exp(-t / (tau * pre["decay"]))
                for r, amp, tau in [(1, 1, 0.5), (3.93, 0.4 * pre["bright"], 0.15), (9.2, 0.2 * pre["bright"], 0.05)]
                if f * r < 0.45 * SR)
        y = y * envelope(n, 0.002, 0.03)
    else:
        raise ValueError(f"unknown instrument {inst!r}; choose from {INSTRUMENTS}")
    return vel * y / max(float(np.abs(y).max()), 1e-8)


def drum(rng, kind: str, kit: dict) -> np.ndarray:
    """kick: falling sine; snare: noise + tone; hat: differentiated noise, short or open."""
    n = int(0.4 * SR)
    t = np.arange(n) / SR
    if kind == "kick":
        f = kit["kick_hz"] * (1 + 2 * np.exp(-t / 0.03))
        return np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t / 0.15)
    noise = rng.standard_normal(n)
    if kind == "snare":
        tone = 0.5 * np.sin(2 * np.pi * kit["snare_hz"] * t)
        return (0.7 * np.diff(noise, prepend=0) + tone) * np.exp(-t / kit["snare_s"])
    hp = np.diff(np.diff(noise, prepend=0), prepend=0)
    return 0.3 * hp * np.exp(-t / (0.2 if kind == "open" else 0.03))


# style: tempo range (bpm), swing, drum pattern over 8 eighths (K kick, S snare, h hat, o open hat),
# comp rhythm (eighths on which chords sound) and length in eighths, instrument pools per role, progressions
# (scale degrees), chord extension (3 = triads, 4 = sevenths), bass pattern, melody density
GENRES = {
    "rock": dict(tempo=(100, 150), swing=0.0, drums=["K", "h", "S", "h", "K", "K", "S", "h"], comp=[0, 4], comp_len=4,
                 inst=dict(bass=["pluck"], comp=["organ", "brass", "pluck"], lead=["brass", "reed", "bowed"]),
                 progs=[[0, 3, 4, 0], [0, 4, 5, 3]], ext=3, bass=[0, 2, 4, 6], minor=0.3, dens=0.5),
    "disco": dict(tempo=(112, 132), swing=0.0, drums=["K", "o", "KS", "o", "K", "o", "KS", "o"], comp=[1, 3, 5, 7],
                  comp_len=1,
                  inst=dict(bass=["reed", "pluck"], comp=["epiano", "organ"], lead=["brass", "bell", "reed"]),
                  progs=[[5, 3, 0, 4], [1, 4, 0, 0]], ext=4, bass=[0, 1, 2, 3, 4, 5, 6, 7], minor=0.5, dens=0.6),
    "jazz": dict(tempo=(90, 180), swing=0.64, drums=["h", "", "hS", "h", "h", "", "hS", "h"], comp=[0, 3, 6],
                 comp_len=2,
                 inst=dict(bass=["pluck"], comp=["piano", "epiano"], lead=["brass", "reed", "flute"]),
                 progs=[[1, 4, 0, 0], [1, 4, 0, 5]], ext=4, bass=[0, 2, 4, 6], minor=0.2, dens=0.7),
    "folk": dict(tempo=(80, 120), swing=0.1, drums=[], comp=[0, 1, 2, 3, 4, 5, 6, 7], comp_len=1,
                 inst=dict(bass=[], comp=["pluck", "piano"], lead=["flute", "bowed", "reed"]),
                 progs=[[0, 3, 4, 0], [0, 0, 3, 4]], ext=3, bass=[], minor=0.3, dens=0.4, arpeggio=True),
    "classical": dict(tempo=(60, 100), swing=0.0, drums=[], comp=[0], comp_len=8,
                      inst=dict(bass=["bowed"], comp=["bowed", "organ", "piano"], lead=["flute", "bowed", "reed"]),
                      progs=[[0, 3, 4, 0], [0, 5, 1, 4]], ext=3, bass=[0], minor=0.5, dens=0.5),
    "reggae": dict(tempo=(66, 90), swing=0.1, drums=["h", "h", "h", "h", "KS", "h", "h", "h"], comp=[2, 6], comp_len=1,
                   inst=dict(bass=["pluck", "reed"], comp=["organ", "epiano", "pluck"],
                             lead=["brass", "flute", "marimba"]),
                   progs=[[0, 3, 0, 4], [5, 4, 0, 0]], ext=3, bass=[0, 3, 4, 6], minor=0.4, dens=0.3),
}
MAJOR, MINOR = [0, 2, 4, 5, 7, 9, 11], [0, 2, 3, 5, 7, 8, 10]


def song(rng, style: str, seconds: float) -> np.ndarray:
    """A multi-track clip in a key: drums, bass on chord roots, a comping instrument, a step-wise melody."""
    g = GENRES[style]
    n = int(seconds * SR)
    out = np.zeros(n + SR)
    beat_s = 60.0 / rng.uniform(*g["tempo"])
    scale = MINOR if rng.uniform() < g["minor"] else MAJOR
    tonic = 48 + int(rng.integers(12))
    prog = g["progs"][rng.integers(len(g["progs"]))]
    kit = dict(kick_hz=rng.uniform(45, 70), snare_hz=rng.uniform(160, 240), snare_s=rng.uniform(0.08, 0.2))
    hits = {kind: drum(rng, kind, kit) for kind in "KSho"}
    roles = {role: make_preset(rng, pool[rng.integers(len(pool))]) for role, pool in g["inst"].items() if pool}

    def at(eighth: int) -> int:  # swing delays every off-beat eighth
        return int(((eighth // 2) + (0.5 + 0.5 * g["swing"] * (eighth % 2 == 1) if eighth % 2 else 0)) * beat_s * SR)

    def add(wav, start, gain):
        e = min(len(out), start + len(wav))
        out[start:e] += gain * wav[:e - start]

    def degree(d: int, octave: int = 0) -> int:
        return tonic + scale[d % 7] + 12 * (d // 7 + octave)

    eighths = int(seconds / beat_s * 2) + 1
    melody_deg = 7 + int(rng.integers(5))
    for e8 in range(eighths):
        chord = prog[(e8 // 8) % len(prog)]
        chord_notes = [degree(chord + 2 * i) for i in range(g["ext"])]
        for kind in g["drums"][e8 % 8] if g["drums"] else "":
            add(hits[kind], at(e8), 0.5 * rng.uniform(0.7, 1.0))
        if "bass" in roles and (e8 % 8) in g["bass"]:
            add(render_note(rng, roles["bass"], chord_notes[0] - 12 + 12 * (tonic < 52), 2 * beat_s), at(e8), 0.5)
        if (e8 % 8) in g["comp"]:
            dur = g["comp_len"] * beat_s / 2 + 0.05
            notes = [chord_notes[e8 % len(chord_notes)]] if g.get("arpeggio") else chord_notes
            for m in notes:
                add(render_note(rng, roles["comp"], m, dur, 0.7), at(e8), 0.3)
        if rng.uniform() < g["dens"]:
            melody_deg = int(np.clip(melody_deg + rng.choice([-2, -1, -1, 1, 1, 2, 0]), 5, 16))
            lead = render_note(rng, roles["lead"], degree(melody_deg, 1), beat_s * rng.choice([0.5, 1.0]) + 0.05)
            add(lead, at(e8), 0.4)
    return room(rng, out[:n], snr_db=(20, 40))


# ----------------------------------------------------------------------------------------------------------------
# Environmental sounds (the ESC-50 analogue): 12 classes from different synthesis families, each a function of an
# rng-drawn variant (its parameters) and the clip's own rng (its rendering)

def decaying(freqs, decay_s, n: int) -> np.ndarray:
    """A kernel of damped sinusoids, sum_k exp(-t / decay) sin(2 pi f_k t) with random phases left out. (n,)."""
    t = np.arange(n) / SR
    freqs, decay_s = np.asarray(freqs, float)[:, None], np.asarray(decay_s, float)[:, None]
    return (np.sin(2 * np.pi * freqs * t) * np.exp(-t / decay_s)).sum(0)


def place(n: int, times: np.ndarray, gains: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Copies of `kernel` starting at `times` (s) with `gains`, by one FFT convolution. (n,)."""
    x = np.zeros(n)
    np.add.at(x, np.clip((np.asarray(times) * SR).astype(int), 0, n - 1), gains)
    L = 1 << int(np.ceil(np.log2(n + len(kernel))))
    return np.fft.irfft(np.fft.rfft(x, L) * np.fft.rfft(kernel, L), L)[:n]


def band_noise(rng, n: int, centre_hz: np.ndarray, width_oct: float, tilt: float = 0.0) -> np.ndarray:
    """White noise through a band around centre_hz (per 8 ms frame, (n // STEP + 1,)) of width_oct octaves."""
    octaves = np.log2(np.maximum(FREQS, 20) / np.maximum(centre_hz, 20)[:, None])
    env = np.exp(-0.5 * (octaves / width_oct) ** 2) * np.maximum(FREQS, 20) ** (tilt / 6)
    return stft_filter([rng.standard_normal(n)], [env])


def slow(rng, T: int, rate_hz: float, depth: float) -> np.ndarray:
    """A smooth random modulation around 1, (T,) per 8 ms frame: a few sinusoids near rate_hz."""
    t = np.arange(T) * STEP / SR
    wave = sum(np.sin(2 * np.pi * rate_hz * rng.uniform(0.5, 1.5) * t + rng.uniform(0, 2 * np.pi)) for _ in range(3))
    return np.exp(depth * wave / 3)


def env_variant(rng, cls: str) -> dict:
    """One variant of a class: the parameters its renderings share (unseen variants are the test split)."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    return dict(cls=cls, rate=u(0.3, 1.0), f=u(0.6, 1.6), width=u(0.4, 1.2), decay=u(0.5, 2.0), depth=u(0.2, 1.0),
                count=int(rng.integers(3, 9)), tilt=u(-3, 1), bright=u(0.2, 1.0), shape=u(0, 1))


def env_sound(rng, v: dict, seconds: float) -> np.ndarray:
    """One rendering of variant v. Each class draws its own events; v scales rates, frequencies and decays."""
    n, T = int(seconds * SR), int(seconds * SR) // STEP + 1
    cls, f, rate, decay = v["cls"], v["f"], v["rate"], v["decay"]
    frames = np.arange(T) * STEP / SR
    if cls == "rain":  # many droplets: short resonances of every pitch at random times, over a hiss
        k = int(rng.poisson(2500 * rate * seconds)) // 8
        drops = sum(place(n, rng.uniform(0, seconds, k), rng.lognormal(0, 0.8, k),
                          decaying([3000 * f * 2 ** rng.uniform(-1.5, 1.5)], [0.0015 * decay], 256)) for _ in range(8))
        y = drops + (0.3 + 0.5 * v["bright"]) * drops.std() * band_noise(rng, n, np.full(T, 5000 * f), 1.5)
    elif cls == "wind":  # band noise whose level and centre drift with the gusts
        gust = slow(rng, T, 0.3 * rate, 2 * v["depth"])
        y = band_noise(rng, n, 300 * f * gust ** 0.5, v["width"]) * np.interp(np.arange(n), frames * SR, gust)
    elif cls == "engine":  # a harmonic buzz at the firing rate, drifting with the rpm, with a formant
        f0 = 35 * f * slow(rng, T, 0.2 * rate, 0.3 * v["depth"])
        k = np.arange(1, 40)
        amps = k ** -0.5 * np.exp(-0.5 * ((np.log2(k * 35 * f / (500 * v["bright"] + 200))) / 0.8) ** 2)
        y = wavetable_osc(amps, np.interp(np.arange(n), frames * SR, f0)) + 0.2 * band_noise(rng, n, 200 * f0, 1.0)
    elif cls == "siren":  # a tone swept up and down (wail: sine; yelp: saw)
        t = np.arange(n) / SR
        phase = (2 * rate * t + rng.uniform()) % 1
        sweep = np.sin(2 * np.pi * phase) if v["shape"] < 0.5 else 2 * np.abs(phase - 0.5) * 2 - 1
        y = wavetable_osc(np.array([1, 0.5 * v["bright"], 0.25 * v["bright"]]),
                          900 * f * (1 + 0.35 * v["depth"] * sweep))
    elif cls == "bird":  # fast FM chirps in phrases
        y = np.zeros(n)
        for start in np.cumsum(rng.exponential(0.12 / rate, 40)):
            if start > seconds - 0.2:
                break
            m = int(SR * 0.04 * (1 + v["decay"]))
            fm = 3500 * f * 2 ** (np.linspace(0, 1, m) * (v["shape"] - 0.5) * 2 + 0.3 * rng.standard_normal())
            seg = np.sin(2 * np.pi * np.cumsum(fm) / SR) * np.hanning(m)
            i = int(start * SR)
            y[i:i + m] += seg[:n - i] * rng.uniform(0.5, 1)
    elif cls in ("knock", "clock", "footsteps"):  # damped impacts: groups of knocks, regular ticks, walking steps
        if cls == "knock":
            groups = rng.uniform(0, 0.3) + np.cumsum(rng.uniform(0.5, 1.2, 6) / rate) - 0.5 / rate
            times = (groups[:, None] + np.arange(v["count"] // 2 + 1) * 0.15 * v["decay"]).ravel()
            kernel = decaying([250 * f, 520 * f], [0.02 * decay, 0.01 * decay], 2048)
        elif cls == "clock":
            times = np.arange(0, seconds, 0.25 + 0.5 * (1 - rate)) + rng.uniform(0, 0.3)
            kernel = decaying([4000 * f, 6500 * f], [0.002, 0.001], 256)
        else:
            times = np.arange(0, seconds, 0.35 + 0.3 * rate) + rng.normal(0, 0.02, int(seconds / 0.35) + 1)[:len(
                np.arange(0, seconds, 0.35 + 0.3 * rate))]
            kernel = decaying([90 * f], [0.03 * decay], 2048) + 0.3 * v["bright"] * rng.standard_normal(2048) * np.exp(
                -np.arange(2048) / (SR * 0.02))
        gains = rng.uniform(0.6, 1.0, len(times)) * (1 + (np.arange(len(times)) % 2) * (v["shape"] - 0.5))
        y = place(n, times, gains, kernel)
    elif cls == "pouring":  # rising bubble resonances, dense, over a low gurgle
        y = np.zeros(n) + 0.1 * band_noise(rng, n, np.full(T, 400 * f), 1.0)
        t = np.arange(1024) / SR
        for _ in range(4):
            f_b = 800 * f * 2 ** rng.uniform(-1, 1)
            bubble = np.sin(2 * np.pi * f_b * (t + 0.5 * v["depth"] * t ** 2 / 0.02)) * np.exp(-t / (0.008 * decay))
            k = int(rng.poisson(100 * rate * seconds))
            y += place(n, rng.uniform(0, seconds, k), rng.lognormal(0, 0.5, k), bubble)
    elif cls == "babble":  # several speakers at once
        y = np.zeros(n)
        for _ in range(v["count"]):
            words = list(rng.choice(list(LEXICON), size=int(seconds * 3)))
            voice = speak(rng, make_speaker(rng), list(STYLES)[rng.integers(4)], words, clean=True)[0]
            start = int(rng.integers(0, max(1, len(voice) - n)))
            voice = voice[start:start + n]
            y[:len(voice)] += voice * rng.uniform(0.5, 1.0) / max(voice.std(), 1e-6)
    elif cls == "glass":  # a break: inharmonic high partials, fast decay, shards then tinkles
        partials = 2500 * f * np.sort(rng.uniform(1, 3.5, 8))
        shards = np.concatenate([rng.uniform(0, 0.1 + 0.3 * v["depth"], v["count"]) + rng.uniform(0, seconds / 3),
                                 rng.uniform(0, seconds, int(4 * rate * seconds))])
        y = place(n, shards, rng.lognormal(0, 0.7, len(shards)), decaying(partials, np.full(8, 0.05 * decay), 8192))
    elif cls == "thunder":  # a crack, then a low rumble rolling in and out
        roll = slow(rng, T, 0.5 * rate, 3 * v["depth"]) * np.exp(-frames / (seconds * decay))
        y = band_noise(rng, n, np.full(T, 80 * f), 1.2, tilt=-3) * np.interp(np.arange(n), frames * SR, roll)
        crack = int(rng.uniform(0, 0.3) * n)
        y[crack:crack + 800] += v["bright"] * 3 * y.std() * rng.standard_normal(len(y[crack:crack + 800])) * np.exp(
            -np.arange(len(y[crack:crack + 800])) / 200)
    else:
        raise ValueError(f"unknown sound class {cls!r}; choose from {ENV_CLASSES}")
    return room(rng, y / max(float(np.abs(y).max()), 1e-8), snr_db=(10, 30))


ENV_CLASSES = ["rain", "wind", "engine", "siren", "bird", "knock", "clock", "footsteps", "pouring", "babble", "glass",
               "thunder"]


# ----------------------------------------------------------------------------------------------------------------
# Corpora and probe tasks. Every clip has its own rng seeded by (seed, set, index): order and workers don't matter.

PROBE_TASKS = {  # task -> (domain, clip set it reads); PR is frame-level, the rest utterance-level
    "KS": ("speech", "ks"), "IC": ("speech", "cmd"), "SID": ("speech", "cmd"), "ER": ("speech", "cmd"),
    "PR": ("speech", "cmd"), "SingerID": ("music", "sing"), "Technique": ("music", "sing"),
    "Instrument": ("music", "note"), "Pitch": ("music", "note"), "Genre": ("music", "song"), "ESC": ("audio", "env"),
}
SET_IDS = {"pool_speech": 1, "pool_music": 2, "ks": 3, "cmd": 4, "sing": 5, "note": 6, "song": 7, "speakers": 8,
           "singers": 9, "presets": 10, "pool_speakers": 11, "env": 12, "env_variants": 13}


def rng_for(cfg: Config, name: str, index: int):
    return np.random.default_rng([cfg.seed, SET_IDS[name], index])


def split_of(i: int, n: int, parts=(0.56, 0.22)) -> str:
    """Deterministic split of item i of n: the first 56% train, the next 22% valid, the rest test."""
    return "train" if i < round(parts[0] * n) else ("valid" if i < round((parts[0] + parts[1]) * n) else "test")


def n_test(n: int, parts=(0.56, 0.22)) -> int:
    """How many of n items split_of puts in test."""
    return n - round((parts[0] + parts[1]) * n)


def jobs(cfg: Config) -> list:
    """Every clip to make, as (set, index, spec); index counts within its set and names the file."""
    specs = {"pool_speech": [None] * int(np.ceil(cfg.pool_minutes * 60 / cfg.pool_clip_s))}
    specs["pool_music"] = list(specs["pool_speech"])
    specs["ks"] = [(s, c, r) for s in range(cfg.speakers) for c in range(len(KS_CLASSES)) for r in range(cfg.ks_reps)]
    cmds = [(a, o, r) for a in range(len(ACTIONS)) for o in range(len(OBJECTS)) for r in range(cfg.ic_reps)]
    n, specs["cmd"] = len(cmds), []  # commands per speaker, 20% of them test for SID
    for s in range(cfg.speakers):  # styles balanced per speaker: a shuffled cycle over the speaker's commands
        styles = np.random.default_rng([cfg.seed, SET_IDS["speakers"], s, 1]).permutation(n) % len(STYLES)
        specs["cmd"] += [(s, a, o, r, int(st)) for (a, o, r), st in zip(cmds, styles)]
    specs["sing"] = [(s, tq, r) for s in range(cfg.singers) for tq in range(len(TECHNIQUES))
                     for r in range(cfg.sing_reps)]
    # preset p of instrument i plays notes_per_preset pitches, a window of a fixed shuffle of the 48 pitches that
    # starts at i * 24 + p * 7: with 24 per preset, two instruments' valid (or test) presets cover every pitch
    shuffle = np.random.default_rng([cfg.seed, SET_IDS["presets"]]).permutation(48)
    note = lambda i, p, j: (i, p, 36 + int(shuffle[(i * 24 + p * 7 + j) % 48]))  # noqa: E731
    specs["note"] = [note(i, p, j) for i in range(len(INSTRUMENTS)) for p in range(cfg.presets)
                     for j in range(cfg.notes_per_preset)]
    specs["song"] = [(g, r) for g in range(len(GENRES)) for r in range(cfg.songs_per_style)]
    # Test-only extras, appended after the base clips so that every base clip keeps its index (and its audio):
    # (test_scale - 1) x each test share, as new people/presets/songs, or new clips of the seen people (SID, SingerID)
    x = cfg.test_scale - 1
    new_speakers = range(cfg.speakers, cfg.speakers + x * n_test(cfg.speakers))
    specs["ks"] += [(s, c, r) for s in new_speakers for c in range(len(KS_CLASSES)) for r in range(cfg.ks_reps)]
    for s in list(range(cfg.speakers)) + list(new_speakers):
        rng = np.random.default_rng([cfg.seed, SET_IDS["speakers"], s, 2])
        if s < cfg.speakers:  # a seen speaker's extra commands (SID test): a random draw of intents, new renderings
            items = [(a, o, cfg.ic_reps + r) for r in range(x) for a in range(len(ACTIONS))
                     for o in range(len(OBJECTS))]
            items = [items[k] for k in rng.permutation(len(items))[:x * n_test(n, (0.6, 0.2))]]
        else:
            items = cmds
        styles = rng.permutation(len(items)) % len(STYLES)
        specs["cmd"] += [(s, a, o, r, int(st)) for (a, o, r), st in zip(items, styles)]
    new_singers = range(cfg.singers, cfg.singers + x * n_test(cfg.singers, (0.6, 0.2)))
    m = len(TECHNIQUES) * cfg.sing_reps  # clips per singer, 20% of them test for SingerID
    for s in range(cfg.singers):
        items = [(tq, cfg.sing_reps + r) for r in range(x * cfg.sing_reps) for tq in range(len(TECHNIQUES))]
        order = np.random.default_rng([cfg.seed, SET_IDS["singers"], s, 2]).permutation(len(items))
        specs["sing"] += [(s, *items[k]) for k in order[:x * n_test(m, (0.6, 0.2))]]
    specs["sing"] += [(s, tq, r) for s in new_singers for tq in range(len(TECHNIQUES)) for r in range(cfg.sing_reps)]
    specs["note"] += [note(i, p, j) for i in range(len(INSTRUMENTS)) for p in range(cfg.presets, cfg.presets + x)
                      for j in range(cfg.notes_per_preset)]
    specs["song"] += [(g, r) for g in range(len(GENRES)) for r in range(
        cfg.songs_per_style, cfg.songs_per_style + x * n_test(cfg.songs_per_style, (0.6, 0.2)))]
    # sounds: variant v of class c, rendering r; the last two base variants are valid and test, the extras test
    specs["env"] = [(c, v, r) for lo, hi in ((0, cfg.env_variants), (cfg.env_variants, cfg.env_variants + x))
                    for c in range(len(ENV_CLASSES)) for v in range(lo, hi) for r in range(cfg.env_reps)]
    return [(kind, i, spec) for kind, items in specs.items() for i, spec in enumerate(items)]


def make_clip(cfg: Config, job: tuple) -> dict:
    """Render one clip, write its WAV, return its CSV metadata."""
    kind, index, spec = job
    rng = rng_for(cfg, kind, index)
    speaker = lambda s: make_speaker(rng_for(cfg, "speakers", s))  # noqa: E731
    meta = {}
    if kind == "pool_speech":  # phrases of random words by random pool speakers, cut to the clip length
        parts, n = [], int(cfg.pool_clip_s * SR)
        while sum(len(p) for p in parts) < n:
            spk = make_speaker(rng_for(cfg, "pool_speakers", int(rng.integers(200))))
            words = list(rng.choice(list(LEXICON), size=rng.integers(3, 8)))
            parts.append(speak(rng, spk, list(STYLES)[rng.integers(4)], words)[0])
        wav = np.concatenate(parts)[:n]
    elif kind == "pool_music":
        wav = song(rng, list(GENRES)[rng.integers(len(GENRES))], cfg.pool_clip_s)
    elif kind == "ks":
        s, c, _ = spec
        cls = KS_CLASSES[c]
        spk = speaker(s)
        if cls == "_silence_":
            wav = room(rng, 1e-4 * rng.standard_normal(SR), snr_db=(-30, -20))
        else:
            word = OTHER_WORDS[rng.integers(len(OTHER_WORDS))] if cls == "_unknown_" else cls
            wav = speak(rng, spk, list(STYLES)[rng.integers(4)], [word])[0]
            wav = np.pad(wav, (0, max(0, SR - len(wav))))[:SR]
        meta = dict(label=cls, speaker=s)
    elif kind == "cmd":  # "[please] ACTION [the] OBJECT" in a random style; fixed 3 s so clips batch together
        s, a, o, rep, style_i = spec
        style = list(STYLES)[style_i]
        words = (["please"] if rng.uniform() < 0.4 else []) + [ACTIONS[a]]
        words += (["the"] if rng.uniform() < 0.5 else []) + [OBJECTS[o]]
        wav, labels = speak(rng, speaker(s), style, words)
        n = 3 * SR
        wav = np.concatenate([wav, 0.01 * np.std(wav) * rng.standard_normal(max(0, n - len(wav)))])[:n]
        labels = (labels + ["sil"] * n_frames(n))[:n_frames(n)]
        meta = dict(intent=f"{ACTIONS[a]}_{OBJECTS[o]}", speaker=s, style=style, rep=rep, frames=" ".join(labels))
    elif kind == "sing":
        s, tq, rep = spec
        spk = make_speaker(rng_for(cfg, "singers", s))
        midi = 12 * np.log2(spk["f0"] / 440) + 69 + rng.uniform(-3, 10)  # a singer's range sits above its speech
        wav = sing(rng, spk, TECHNIQUES[tq], midi, 1.5)
        meta = dict(singer=s, technique=TECHNIQUES[tq], rep=rep)
    elif kind == "note":
        i_inst, p, midi = spec
        pre = make_preset(np.random.default_rng([cfg.seed, SET_IDS["presets"], i_inst, p, 1]), INSTRUMENTS[i_inst])
        detune = rng.uniform(-0.3, 0.3)  # semitones: real instruments are rarely exactly in tune
        note = render_note(rng, pre, midi + detune, 0.9, rng.uniform(0.5, 1.0))
        wav = room(rng, np.concatenate([note, np.zeros(SR // 10)]), snr_db=(15, 35))
        meta = dict(instrument=INSTRUMENTS[i_inst], preset=p, pitch=midi)
    elif kind == "song":
        g, rep = spec
        wav = song(rng, list(GENRES)[g], 4.0)
        meta = dict(genre=list(GENRES)[g], rep=rep)
    else:  # 2, 2.5 or 3 s, so that clips of one length batch together
        c, v, _ = spec
        variant = env_variant(rng_for(cfg, "env_variants", c * 1000 + v), ENV_CLASSES[c])
        wav = env_sound(rng, variant, float(rng.choice([2.0, 2.5, 3.0])))
        meta = dict(sound=ENV_CLASSES[c], variant=v)
    folder = os.path.join(cfg.data_dir, kind if kind.startswith("pool") else "probe") + ".partial"
    name = f"{kind}_{index:05d}.wav"
    write_wav(os.path.join(folder, name), wav)
    return dict(kind=kind, index=index, spec=spec, file=name, seconds=len(wav) / SR, **meta)


def task_rows(cfg: Config, clips: list) -> dict:
    """The probe CSVs: task -> rows (path, label, split[, frames]). Splits are deterministic, as in SUPERB and MARBLE:
    KS, IC, ER, PR, Technique test on unseen speakers/singers; SID and SingerID on unseen clips of the same people;
    Instrument and Pitch on unseen renderings (presets); Genre on unseen songs."""
    by_kind = {}
    for c in clips:
        by_kind.setdefault(c["kind"], []).append(c)
    rows = {t: [] for t in PROBE_TASKS}
    spk_split = lambda s: split_of(s, cfg.speakers)  # noqa: E731  (speakers past cfg.speakers: the extra test ones)
    for c in by_kind.get("ks", []):
        rows["KS"].append((c["file"], c["label"], spk_split(c["speaker"])))
    cmd = by_kind.get("cmd", [])
    for c in cmd:
        if c["rep"] < cfg.ic_reps:  # the base commands: unseen-speaker tasks
            rows["IC"].append((c["file"], c["intent"], spk_split(c["speaker"])))
            rows["ER"].append((c["file"], c["style"], spk_split(c["speaker"])))
            rows["PR"].append((c["file"], "", spk_split(c["speaker"]), c["frames"]))
    for s in range(cfg.speakers):  # SID: the same speakers in every split, unseen clips in valid and test
        own = [c for c in cmd if c["speaker"] == s and c["rep"] < cfg.ic_reps]
        order = np.random.default_rng([cfg.seed, 100 + s]).permutation(len(own))  # intents in every split
        rows["SID"] += [(c["file"], f"spk{s:02d}", split_of(int(k), len(own), (0.6, 0.2))) for c, k in zip(own, order)]
        rows["SID"] += [(c["file"], f"spk{s:02d}", "test") for c in cmd
                        if c["speaker"] == s and c["rep"] >= cfg.ic_reps]
    sing = by_kind.get("sing", [])
    for s in range(cfg.singers):  # SingerID: the same singers in every split, unseen clips in valid and test
        own = [c for c in sing if c["singer"] == s and c["rep"] < cfg.sing_reps]
        order = np.random.default_rng([cfg.seed, s]).permutation(len(own))  # mix techniques across splits
        rows["SingerID"] += [(c["file"], f"singer{s:02d}", split_of(int(k), len(own), (0.6, 0.2)))
                             for c, k in zip(own, order)]
        rows["SingerID"] += [(c["file"], f"singer{s:02d}", "test") for c in sing
                             if c["singer"] == s and c["rep"] >= cfg.sing_reps]
    for c in sing:
        if c["rep"] < cfg.sing_reps:  # unseen singers (the extra singers are test ones)
            rows["Technique"].append((c["file"], c["technique"], split_of(c["singer"], cfg.singers, (0.6, 0.2))))
    for c in by_kind.get("note", []):
        split = "train" if c["preset"] < cfg.presets - 2 else ("valid" if c["preset"] == cfg.presets - 2 else "test")
        rows["Instrument"].append((c["file"], c["instrument"], split))
        rows["Pitch"].append((c["file"], str(c["pitch"]), split))
    for c in by_kind.get("song", []):  # unseen songs; the extra songs are test ones
        rows["Genre"].append((c["file"], c["genre"], split_of(c["rep"], cfg.songs_per_style, (0.6, 0.2))))
    for c in by_kind.get("env", []):  # unseen variants of each sound class
        v = c["variant"]
        rows["ESC"].append((c["file"], c["sound"], "train" if v < cfg.env_variants - 2 else
                            "valid" if v == cfg.env_variants - 2 else "test"))
    return rows


def manifest_config(cfg: Config) -> dict:
    """What decides the audio: the generator version and every field but the folder and the worker count."""
    return dict(version=VERSION, **{k: v for k, v in asdict(cfg).items() if k not in ("data_dir", "workers")})


def _work(args):
    return make_clip(*args)


def generate(cfg: Config) -> dict:
    """Make every corpus and probe set under cfg.data_dir unless a manifest for the same config is there.
    Writes into *.partial folders and renames them at the end, so an interrupted run never looks finished."""
    manifest_path = os.path.join(cfg.data_dir, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        if manifest["config"] == manifest_config(cfg):
            return manifest
        print(f"{manifest_path} was made with another config; regenerating", flush=True)
        os.remove(manifest_path)  # from here until the new manifest is written, the folder is incomplete and says so
    folders = ["pool_speech", "pool_music", "probe"]
    for d in folders:
        shutil.rmtree(os.path.join(cfg.data_dir, d + ".partial"), ignore_errors=True)
        os.makedirs(os.path.join(cfg.data_dir, d + ".partial"))
    todo = jobs(cfg)
    t0, clips, seconds = time.time(), [], 0.0
    if cfg.workers > 1:
        import multiprocessing
        pool = multiprocessing.get_context("fork").Pool(cfg.workers)
        results = pool.imap_unordered(_work, [(cfg, j) for j in todo], chunksize=8)
    else:
        pool, results = None, map(_work, [(cfg, j) for j in todo])
    for c in results:
        clips.append(c)
        seconds += c["seconds"]
        if len(clips) % 200 == 0 or len(clips) == len(todo):
            el = time.time() - t0
            print(f"tasks: {len(clips)}/{len(todo)} clips, {seconds / 60:.1f} min of audio, {el:.0f} s elapsed, "
                  f"ETA {el / len(clips) * (len(todo) - len(clips)):.0f} s", flush=True)
    if pool is not None:
        pool.close()
    clips.sort(key=lambda c: (c["kind"], c["index"]))
    for task, rows in task_rows(cfg, clips).items():
        with open(os.path.join(cfg.data_dir, "probe.partial", f"{task}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "split", "frames"] if task == "PR" else ["path", "label", "split"])
            w.writerows(rows)
    for d in folders:
        shutil.rmtree(os.path.join(cfg.data_dir, d), ignore_errors=True)
        os.rename(os.path.join(cfg.data_dir, d + ".partial"), os.path.join(cfg.data_dir, d))
    minutes = {k: sum(c["seconds"] for c in clips if c["kind"] == k) / 60 for k in SET_IDS
               if any(c["kind"] == k for c in clips)}
    manifest = dict(config=manifest_config(cfg),
                    minutes=minutes, clips=len(clips), seconds_to_make=round(time.time() - t0, 1))
    with open(manifest_path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(manifest_path + ".tmp", manifest_path)
    return manifest


def ensure_data(data_dir: str) -> None:
    """For scripts that need data: make the default corpora if data_dir holds none (whatever config made an
    existing one, it is used as it is; run tasks.py to remake it)."""
    if not os.path.exists(os.path.join(data_dir, "manifest.json")):
        print(f"no corpora in {data_dir}/: making them (python tasks.py), about a minute", flush=True)
        generate(Config(data_dir=data_dir))


# ----------------------------------------------------------------------------------------------------------------
# Classical features on the encoders' frame grid: the log-mel baseline (SUPERB's FBANK), the speech teacher's MFCC
# units, the music teacher's chroma units and CQT-like target (MERT). Torch, so they batch with the encoders.

@functools.lru_cache
def mel_filterbank(n_mels: int = 80, n_fft: int = 512, fmin: float = 0.0, fmax: float = 8000.0) -> torch.Tensor:
    """Triangular filters evenly spaced on the HTK mel scale -> (n_fft // 2 + 1, n_mels)."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    hz = 700 * (10 ** (np.linspace(mel(fmin), mel(fmax), n_mels + 2) / 2595) - 1)
    bins = np.fft.rfftfreq(n_fft, 1 / SR)[:, None]
    lo, mid, hi = hz[None, :-2], hz[None, 1:-1], hz[None, 2:]
    fb = np.maximum(0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))
    return torch.tensor(fb, dtype=torch.float32)


def frame_power(wav: torch.Tensor, win: int, n_fft: int = 0) -> torch.Tensor:
    """Power spectra of Hann windows of `win` samples centred on the frame grid (frame i on sample 320 i + 200),
    zero-padded to n_fft (default win). (B, n) -> (B, T, n_fft // 2 + 1), T = n_frames(n)."""
    pad = (win - WIN) // 2
    x = torch.nn.functional.pad(wav, (pad, pad + win))
    frames = x.unfold(-1, win, HOP)[:, :n_frames(wav.shape[-1])] * torch.hann_window(win)  # (B, T, win)
    return torch.fft.rfft(frames, n=n_fft or win).abs() ** 2


def mel_power(wav: torch.Tensor) -> torch.Tensor:
    """80 mel bands of a 400-sample (25 ms) window, each frame covering exactly an encoder frame. (B, T, 80)."""
    return frame_power(wav, WIN, 512) @ mel_filterbank()


def log_mel(wav: torch.Tensor) -> torch.Tensor:
    """The FBANK baseline every score is normalised against. (B, n) -> (B, T, 80)."""
    return torch.log(mel_power(wav) + 1e-6)


def mfcc(wav: torch.Tensor, n_mfcc: int = 13) -> torch.Tensor:
    """MFCCs with deltas, 39 dims per 20 ms frame (HuBERT iteration 1 clusters these). (B, n) -> (B, T, 39)."""
    logmel = torch.log(frame_power(wav, 512) @ mel_filterbank(40) + 1e-6)  # (B, T, 40)
    k = torch.arange(40)
    dct = torch.cos(math.pi / 40 * (k[:, None] + 0.5) * torch.arange(n_mfcc)[None])  # (40, 13) DCT-II
    c = logmel @ dct
    d1 = torch.gradient(c, dim=1)[0]
    return torch.cat([c, d1, torch.gradient(d1, dim=1)[0]], -1)


def semitone_spectrum(wav: torch.Tensor, bins_per_semitone: int = 3) -> torch.Tensor:
    """A CQT-like log spectrum: a 128 ms window (enough resolution for low notes) folded into bins spaced by 1/3
    semitone from MIDI 28 to 100 (41 Hz - 2.6 kHz). MERT's musical teacher reconstructs a CQT. (B, T, 216)."""
    n_fft = 2048
    power = frame_power(wav, n_fft)  # (B, T, 1025)
    freqs = torch.fft.rfftfreq(n_fft, 1 / SR)
    centres = 440 * 2 ** ((torch.arange(28 * bins_per_semitone, 100 * bins_per_semitone) / bins_per_semitone - 69) / 12)
    width = centres * (2 ** (1 / (12 * bins_per_semitone)) - 1)  # one bin's bandwidth
    fb = torch.exp(-0.5 * ((freqs[:, None] - centres[None]) / torch.clamp(width, min=freqs[1] / 2)) ** 2)
    return torch.log(power @ (fb / fb.sum(0)) + 1e-6)


def periodicity(wav: torch.Tensor, lowest_midi: int = 36, highest_midi: int = 96) -> torch.Tensor:
    """Normalised autocorrelation of each frame's own 400 samples at the periods of the semitones from lowest_midi
    to highest_midi (245 to 7.6 samples; fractional lags interpolated): peaks where the frame repeats, i.e. its
    pitch, readable from the same 25 ms the conv front end sees. (B, n) -> (B, T, 61), values in [-1, 1]."""
    frames = wav.unfold(-1, WIN, HOP)[:, :n_frames(wav.shape[-1])]  # (B, T, 400)
    frames = frames - frames.mean(-1, keepdim=True)
    r = torch.fft.irfft(torch.fft.rfft(frames, n=1024).abs() ** 2, n=1024)  # (B, T, 1024), lag 0 first
    lags = SR / (440 * 2 ** ((torch.arange(lowest_midi, highest_midi + 1) - 69) / 12))
    low = lags.floor().long()
    frac = lags - low
    return (r[..., low] * (1 - frac) + r[..., low + 1] * frac) / (r[..., :1] + 1e-8)


def chroma(wav: torch.Tensor) -> torch.Tensor:
    """Energy per pitch class: bin j holds MIDI notes 28 + j + 12 k. (B, n) -> (B, T, 12)."""
    semis = semitone_spectrum(wav, 1).exp()  # (B, T, 72), one bin per semitone
    return semis.view(*semis.shape[:2], 6, 12).sum(2)


# ================================================================================================================
# Part 2: plumbing (skip on first read): reading and writing audio files, the command line shared by every script

def resample(wav: np.ndarray, sr_in: int, sr_out: int = SR) -> np.ndarray:
    """Band-limited resampling by the FFT: keep the spectrum below both Nyquist limits, change the length.
    Exact for band-limited periodic signals; the ends see a small wrap-around, harmless for clips of seconds."""
    if sr_in == sr_out:
        return wav
    n_out = max(1, int(round(len(wav) * sr_out / sr_in)))
    spec = np.fft.rfft(wav.astype(np.float64))
    keep = min(len(spec), n_out // 2 + 1)
    out_spec = np.zeros(n_out // 2 + 1, dtype=complex)
    out_spec[:keep] = spec[:keep]
    if n_out % 2 == 0 and keep == n_out // 2 + 1:
        out_spec[-1] = out_spec[-1].real  # the new Nyquist bin of an even length must be real
    return (np.fft.irfft(out_spec, n_out) * (n_out / len(wav))).astype(np.float32)


def read_audio(path: str, max_seconds: float = 30.0) -> np.ndarray:
    """Any file soundfile reads -> (n,) float32 at 16 kHz, normalised.
    The rule for foreign audio: channels averaged to mono; NaN/inf set to 0; resampled to 16 kHz; longer than
    max_seconds -> the centre max_seconds; shorter than one frame (400 samples) -> zero-padded to one frame."""
    try:
        wav, sr = sf.read(path, dtype="float32", always_2d=True)  # (n, channels)
    except Exception as e:  # soundfile raises several types; one clear line is what the user needs
        raise ValueError(f"cannot read audio file {path!r} ({type(e).__name__}: {e}); give a WAV/FLAC/OGG file") \
            from None
    if wav.shape[0] == 0:
        raise ValueError(f"audio file {path!r} is empty (0 samples); remove it or replace it")
    wav = resample(np.nan_to_num(wav.mean(axis=1)), sr, SR)
    max_n = int(max_seconds * SR)
    if len(wav) > max_n:
        start = (len(wav) - max_n) // 2
        wav = wav[start:start + max_n]
    if len(wav) < WIN:
        wav = np.pad(wav, (0, WIN - len(wav)))
    return normalize(wav)


def write_wav(path: str, wav: np.ndarray) -> None:
    """16-bit WAV, peak-normalised to 0.9 (the encoders normalise per clip anyway)."""
    peak = max(float(np.abs(wav).max()), 1e-8)
    sf.write(path, (0.9 * wav / peak).astype(np.float32), SR, subtype="PCM_16")


def config_parser(cls, doc: str) -> argparse.ArgumentParser:
    """A script's command line from its Config (one source of truth): a --flag per field, its help the field's
    trailing comment, its group the comment line above it; a bool becomes --name / --no-name. Errors: one line."""
    parser = _OneLineParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    group, heading = parser, None
    for line in inspect.getsource(cls).splitlines():
        field = re.match(r"\s+(\w+): \w+ = .*?  # (.*)$", line)
        if re.match(r"\s+# ", line):
            heading = line.strip()[2:]
        elif field:
            if heading:
                group, heading = parser.add_argument_group(heading), None
            f = next(f for f in fields(cls) if f.name == field.group(1))
            kind = type(f.default)
            kw = dict(action=argparse.BooleanOptionalAction) if kind is bool else dict(type=kind, metavar=kind.__name__)
            group.add_argument("--" + f.name, default=f.default, help=field.group(2) + " (default: %(default)s)", **kw)
    return parser


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        sys.exit(f"error: {message}; see --help")


def check_config(cfg, ranges: dict = (), choices: dict = ()) -> None:
    """Refuse options out of range before any work: ranges name -> (low, high), None = unbounded, both inclusive;
    choices name -> allowed values. One line naming the flag and what it may be."""
    for name, (low, high) in dict(ranges).items():
        value = getattr(cfg, name)
        if (low is not None and value < low) or (high is not None and value > high):
            want = f">= {low}" if high is None else (f"<= {high}" if low is None else f"in [{low}, {high}]")
            raise ValueError(f"--{name} must be {want}, got {value}")
    for name, allowed in dict(choices).items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"--{name} must be one of {', '.join(map(repr, allowed))}, got {getattr(cfg, name)!r}")


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of handing every large block back to the OS. By default each block
    over a few MB is a fresh mmap, so every conv-front-end activation pays page faults for memory it just freed:
    measured here, 1.6x on a student's feature extraction and 1.1x on a training step. No effect on any number, and
    nothing to do on other C libraries."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: blocks below 1 GiB come from the heap
        libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD: and the heap is not trimmed back under 2 GiB of slack
    except (OSError, AttributeError):
        pass


def one_line(e: BaseException) -> str:
    """The error line every script exits with: what went wrong, never a traceback."""
    if isinstance(e, OSError) and e.filename:
        return f"error: cannot use {e.filename}: {e.strerror or e}"
    if isinstance(e, KeyboardInterrupt):
        return "error: interrupted (checkpoints and finished files are kept; rerun to continue)"
    return f"error: {e}"


def main(argv=None):
    cfg = Config(**vars(config_parser(Config, __doc__).parse_args(argv)))
    keep_freed_memory()
    print(json.dumps(asdict(cfg)), flush=True)
    try:
        check_config(cfg, ranges=dict(pool_minutes=(0.01, None), pool_clip_s=(1.0, None), speakers=(5, None),
                                      ks_reps=(1, None), ic_reps=(1, None), singers=(5, None), sing_reps=(1, None),
                                      presets=(3, None), notes_per_preset=(1, 48), songs_per_style=(5, None),
                                      env_variants=(3, None), env_reps=(1, None), test_scale=(1, None),
                                      workers=(1, None)))
        manifest = generate(cfg)
    except (ValueError, OSError, KeyboardInterrupt) as e:
        sys.exit(one_line(e))
    print("minutes of audio per set: " + ", ".join(f"{k} {v:.1f}" for k, v in manifest["minutes"].items()))
    for task, (domain, _) in PROBE_TASKS.items():
        with open(os.path.join(cfg.data_dir, "probe", f"{task}.csv")) as f:
            rows = list(csv.DictReader(f))
        counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "valid", "test")}
        classes = len({lab for r in rows for lab in (r["frames"].split() if task == "PR" else [r["label"]])})
        print(f"{task:10s} {domain:6s} {classes:3d} classes  " + "  ".join(f"{s} {n:4d}" for s, n in counts.items()))
    print(f"data ready in {cfg.data_dir}/ ({manifest['clips']} clips, made in {manifest['seconds_to_make']} s)")


if __name__ == "__main__":
    sys.exit(main())
