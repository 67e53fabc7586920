"""Real checkpoints: a small random transformers HubertModel, saved in every layout tiny_distill reads, must give the
same hidden states through our Encoder (issue 5). The layouts other than transformers' are written here by renaming
keys by hand, independently of tiny_distill.KEY_MAPS."""
import json
import re

import pytest
import torch

import tiny_distill as td

transformers = pytest.importorskip("transformers",
                                   reason="transformers is a test-only extra: pip install -r tests/requirements.txt")

D, HEADS, LAYERS, C = 128, 2, 3, 32  # head width 64, as every HuBERT-family model, so the head count is inferable


def hf_model(feature_layernorm=True, seed=0):
    cfg = transformers.HubertConfig(hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                    intermediate_size=96, conv_dim=(C,) * 7, num_conv_pos_embeddings=16,
                                    num_conv_pos_embedding_groups=4, feat_proj_layer_norm=feature_layernorm)
    torch.manual_seed(seed)
    model = transformers.HubertModel(cfg).eval()
    with torch.no_grad():  # every tensor random, LayerNorm gains included, so a swapped key cannot go unnoticed
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if "conv_layers" in name else 0.1)
                    + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return model


def to_fairseq(sd):
    out = {}
    for k, v in sd.items():
        k = (re.sub(r"conv_layers\.(\d+)\.conv\.", r"conv_layers.\1.0.", k)
             .replace("conv_layers.0.layer_norm.", "conv_layers.0.2."))
        k = (k.replace("feature_projection.layer_norm.", "layer_norm.")
             .replace("feature_projection.projection.", "post_extract_proj."))
        k = k.replace("masked_spec_embed", "mask_emb").replace("encoder.pos_conv_embed.conv.", "encoder.pos_conv.0.")
        k = (k.replace("parametrizations.weight.original0", "weight_g")
             .replace("parametrizations.weight.original1", "weight_v"))
        k = (re.sub(r"layers\.(\d+)\.layer_norm\.", r"layers.\1.self_attn_layer_norm.", k)
             .replace(".attention.", ".self_attn."))
        out[k.replace("feed_forward.intermediate_dense", "fc1").replace("feed_forward.output_dense", "fc2")] = v
    return out


def to_torchaudio(sd):
    out = {}
    for k, v in sd.items():
        if k == "masked_spec_embed":  # Wav2Vec2Model has no mask embedding
            continue
        k = k.replace("feature_projection.", "encoder.feature_projection.")
        out[re.sub(r"^encoder\.(pos_conv_embed|layer_norm|layers)", r"encoder.transformer.\1", k)] = v
    return out


class FairseqConfig:  # stands in for the argparse/omegaconf objects fairseq pickles beside the weights
    def __init__(self):
        self.encoder_layers, self.label_rate = LAYERS, 50


def save_layouts(model, root):
    """-> {layout name: path}, one file or folder per layout and key style."""
    sd = model.state_dict()
    paths = {}
    hf = root / "hf"
    hf.mkdir()
    torch.save(sd, hf / "pytorch_model.bin")
    model.config.to_json_file(str(hf / "config.json"))
    paths["transformers folder"] = hf
    old_style = {k.replace("parametrizations.weight.original0", "weight_g")
                  .replace("parametrizations.weight.original1", "weight_v"): v
                 for k, v in sd.items()}
    torch.save({"hubert." + k: v for k, v in old_style.items()}, root / "hf_prefixed_weight_g.bin")
    paths["transformers, hubert. prefix, weight_g/weight_v"] = root / "hf_prefixed_weight_g.bin"
    try:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, str(root / "model.safetensors"))
        paths["safetensors"] = root / "model.safetensors"
    except ImportError:
        pass
    fs = to_fairseq(sd)
    fs.update({"label_embs_concat": torch.randn(10, 8), "final_proj.weight": torch.randn(8, D),
               "final_proj.bias": torch.randn(8)})
    torch.save({"model": fs, "cfg": FairseqConfig(), "args": None}, root / "hubert_base_ls960.pt")
    paths["fairseq"] = root / "hubert_base_ls960.pt"
    torch.save(to_torchaudio(sd), root / "hubert_fairseq_base_ls960.pth")
    paths["torchaudio"] = root / "hubert_fairseq_base_ls960.pth"
    ta_param = {k.replace("weight_g", "parametrizations.weight.original0")
                 .replace("weight_v", "parametrizations.weight.original1"): v
                for k, v in to_torchaudio(old_style).items()}
    torch.save(ta_param, root / "torchaudio_param.pth")
    paths["torchaudio, parametrizations"] = root / "torchaudio_param.pth"
    return paths


def max_diff(model, enc, wav):
    with torch.no_grad():
        theirs = model(wav, output_hidden_states=True).hidden_states
        ours = enc(wav)
    assert len(theirs) == len(ours) == LAYERS + 1
    return max(float((a - b).abs().max()) for a, b in zip(theirs, ours))


@pytest.fixture(scope="module")
def hubert(tmp_path_factory):
    model = hf_model()
    return model, save_layouts(model, tmp_path_factory.mktemp("real"))


def test_every_layout_gives_transformers_hidden_states(hubert):
    model, paths = hubert
    wav = torch.randn(2, 4000)
    for name, path in paths.items():
        enc = td.load_encoder(str(path))
        assert (enc.cfg.conv_channels, enc.cfg.dim, enc.cfg.layers, enc.cfg.heads) == (C, D, LAYERS, HEADS), name
        assert max_diff(model, enc, wav) < 1e-5, name


def test_a_wrong_mapping_breaks_parity(hubert, monkeypatch):
    """Swapping two rules (query <-> key projections) must be caught: the parity check can fail."""
    model, paths = hubert
    attn = r"encoder\.layers\.(\d+)\.self_attn\.{}_proj\.(weight|bias)"
    wrong = [(attn.format("q"), r"layers.\1.attention.k_proj.\2"), (attn.format("k"), r"layers.\1.attention.q_proj.\2")]
    wrong += td.KEY_MAPS["fairseq"]  # the first matching rule wins, so q and k are now routed to each other
    monkeypatch.setitem(td.KEY_MAPS, "fairseq", wrong)
    assert max_diff(model, td.load_encoder(str(paths["fairseq"])), torch.randn(2, 4000)) > 1e-3


def test_unknown_keys_are_an_error_that_lists_them(hubert, tmp_path):
    model, _ = hubert
    sd = dict(model.state_dict(), **{"encoder.adapter.weight": torch.zeros(3)})
    torch.save(sd, tmp_path / "odd.bin")
    with pytest.raises(ValueError, match="encoder.adapter.weight"):
        td.load_encoder(str(tmp_path / "odd.bin"))


def test_distilhubert_layout_without_feature_layernorm_and_with_heads(tmp_path):
    """s3prl's DistilHuBERT: fairseq names, no 512-d LayerNorm, and SplitLinear heads mapped onto PredictionHeads."""
    model = hf_model(feature_layernorm=False, seed=1)
    K = 3
    heads = {"output_layer.0.weight": torch.randn(K * D, D) * 0.1, "output_layer.0.bias": torch.randn(K * D) * 0.1,
             "output_layer.2.weight": torch.randn(K, D, D) * 0.1, "output_layer.2.bias": torch.randn(1, 1, K, D) * 0.1}
    torch.save({"Distiller": dict(to_fairseq(model.state_dict()), **heads), "Config": {"n_tasks": K}},
               tmp_path / "distilhubert.ckpt")
    enc_cfg, state, _, head_state = td.read_encoder(str(tmp_path / "distilhubert.ckpt"))
    assert not enc_cfg.feature_layernorm
    assert max_diff(model, td.load_encoder(str(tmp_path / "distilhubert.ckpt")), torch.randn(1, 3000)) < 1e-5
    ours = td.PredictionHeads(D, D, K)
    ours.load_state_dict(head_state)
    x = torch.randn(2, 5, D)
    h = torch.nn.functional.gelu(x @ heads["output_layer.0.weight"].T + heads["output_layer.0.bias"]).view(2, 5, K, D)
    s3prl = torch.einsum("btki,kio->btko", h, heads["output_layer.2.weight"]) + heads["output_layer.2.bias"][0, 0]
    assert torch.allclose(ours(x), s3prl.permute(0, 2, 1, 3), atol=1e-5)


def test_distillation_runs_from_a_transformers_teacher(hubert, tiny_data, tmp_path):
    """--teacher_speech/--teacher_music take real-layout checkpoints; theta0 is then the real teacher's layers 1-2."""
    _, paths = hubert
    teacher = str(paths["transformers folder"])
    cfg = td.Config(domain="music", data_dir=tiny_data.data_dir, teacher_speech=teacher, teacher_music=teacher,
                    init=str(tmp_path / "theta0.pt"), out_dir=str(tmp_path / "run"), steps=2, batch=2, crop_s=0.5,
                    log_every=1)
    res = td.train(cfg)
    student, real = td.load_encoder(res["student"]), td.load_encoder(teacher)
    assert (student.cfg.dim, student.cfg.layers, student.cfg.conv_channels) == (D, 2, C)
    theta0 = torch.load(cfg.init, weights_only=True)
    assert torch.equal(theta0["encoder"]["layers.1.fc1.weight"], real.state_dict()["layers.1.fc1.weight"])
    assert theta0["teacher_fingerprint"] == real.fingerprint


def test_parameter_counts_match_the_real_models():
    """From configs alone: HuBERT Base 94.37M without heads, the DistilHuBERT student 23.49M."""
    with torch.device("meta"):
        base = td.Encoder(td.EncoderConfig())
        student = td.Encoder(td.student_config(td.EncoderConfig(feature_layernorm=False)))
    assert round(td.count_parameters(base) / 1e6, 2) == 94.37
    assert round(td.count_parameters(student) / 1e6, 2) == 23.49


def test_config_json_overrides_the_inferred_head_count(hubert, tmp_path):
    model, paths = hubert
    folder = tmp_path / "hf4"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"num_attention_heads": 4}))
    assert td.read_encoder(str(folder))[0].heads == 4
