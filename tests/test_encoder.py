"""tiny_distill.py's Encoder: the frame grid, attention, bf16, the heads and the loss, and that it can learn."""
import math

import pytest
import torch
import torch.nn.functional as F

import tasks
import tiny_distill as td


def small_encoder(**kw):
    return td.Encoder(td.EncoderConfig(**{**dict(conv_channels=8, dim=32, layers=1, heads=2, ffn=64, pos_kernel=8,
                                                 pos_groups=2), **kw}))


def test_frames_follow_the_conv_length_formula():
    """T = floor((n - 400) / 320) + 1 for every input length, from the encoder itself."""
    enc = small_encoder()
    for n in (400, 719, 720, 1039, 16000, 33333):
        hidden = enc(torch.randn(1, n))
        assert len(hidden) == 2 and hidden[0].shape == (1, tasks.n_frames(n), 32)
    with pytest.raises(ValueError, match="shorter than one frame"):
        enc(torch.randn(1, 399))


def test_attention_equals_a_hand_computation():
    """softmax(q k^T / sqrt(d)) v per head, then the output projection."""
    torch.manual_seed(0)
    att = td.SelfAttention(16, 4)
    x = torch.randn(2, 7, 16)
    q, k, v = (p(x).view(2, 7, 4, 4).transpose(1, 2) for p in (att.q_proj, att.k_proj, att.v_proj))
    y = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), -1) @ v
    assert torch.allclose(att(x), att.out_proj(y.transpose(1, 2).reshape(2, 7, 16)), atol=1e-6)


def test_loss_equals_a_hand_computation():
    """Per head: mean |p - t| - mean log sigmoid(cos(p, t)); then the mean over heads."""
    p, t = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    loss, l1, cos = td.distill_loss(p, t)
    by_hand = [(p[:, h] - t[:, h]).abs().mean() - F.logsigmoid(F.cosine_similarity(p[:, h], t[:, h], -1)).mean()
               for h in range(3)]
    assert torch.allclose(loss, torch.stack(by_hand).mean()) and l1.shape == cos.shape == (3,)
    assert td.distill_loss(t, t)[0] == pytest.approx(-F.logsigmoid(torch.tensor(1.0)).item(), abs=1e-5)


def test_bf16_autocast_stays_close_to_fp32():
    """The whole encoder under bf16 autocast matches fp32 (the positional conv runs in fp32: torch 2.13's CPU bf16
    grouped conv is wrong for 8-12 channels per group)."""
    torch.manual_seed(0)
    enc = small_encoder(conv_channels=16, dim=48, layers=2, pos_kernel=16, pos_groups=4)
    wav = torch.randn(2, 4000)
    with torch.no_grad():
        ref = enc(wav)[-1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = enc(wav)[-1].float()
    assert ((low - ref).norm() / ref.norm()).item() < 0.05


def test_target_layers_are_a_third_two_thirds_and_all_of_the_depth():
    assert td.target_layers(12) == [4, 8, 12] and td.target_layers(6) == [2, 4, 6]


def test_tiny_student_overfits_one_batch():
    """On one repeated batch the distillation loss falls by at least half."""
    torch.manual_seed(0)
    student, heads = small_encoder(conv_channels=16, layers=2), td.PredictionHeads(32, 24, 3)
    wav, target = torch.randn(2, 4000), torch.randn(2, 3, 12, 24)
    opt = torch.optim.AdamW(list(student.parameters()) + list(heads.parameters()), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = td.distill_loss(heads(student(wav)[-1]), target)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("T, kernel, groups", [(99, 64, 12), (7, 16, 2), (50, 128, 16), (3, 8, 4)])
def test_positional_conv_by_fft_equals_the_direct_grouped_conv(T, kernel, groups):
    """The product-of-spectra positional conv is F.conv1d with 'same' padding, the last frame dropped (even K)."""
    torch.manual_seed(0)
    D = 16 * groups
    x, w = torch.randn(3, D, T), torch.randn(D, 16, kernel) / kernel
    direct = F.conv1d(x, w, padding=kernel // 2, groups=groups)[:, :, :T]
    assert torch.allclose(td.grouped_conv_fft(x, w, groups), direct, atol=1e-5)
