"""The umT5 text encoder beyond the examples of nbs/14_text.ipynb (which nbdev_test runs): the golden file's recorded
config, loading from every format, error messages, the full-size manifest, the cache's eviction and copies. 14 already
asserts the tiny encoder against the golden hidden states; that is checked there only."""
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from infcam.core import InfcamError
from infcam.text import (TextEncoder, build_tiny_tokenizer, clean_prompt, convert_umt5_state_dict, load_tokenizer,
                         load_umt5, load_umt5_original, read_state_dict, umt5_config, umt5_config_from_state_dict,
                         umt5_from_state_dict, umt5_to_original)

DATA = Path(__file__).parent / "data"
TEXTS = ["a cat sits on a red sofa", "the camera pans slowly to the right", "a dog runs across a sunny park",
         "waves crash on the rocky shore at sunset", "a city street at night with neon lights"]


@pytest.fixture(scope="module")
def golden():
    g = load_file(DATA / "golden" / "umt5_tiny.safetensors")
    sd = {k[len("state_dict."):]: v for k, v in g.items() if k.startswith("state_dict.")}
    return g, sd


def _hidden(model, g):
    with torch.no_grad():
        return model(input_ids=g["input.ids"], attention_mask=g["input.mask"]).last_hidden_state


def _golden_err(model, g):
    keep = g["input.mask"].bool()
    return (_hidden(model, g) - g["output.hidden"])[keep].abs().max().item()


def test_golden_config_from_metadata(golden):
    g, sd = golden
    from safetensors import safe_open
    with safe_open(str(DATA / "golden" / "umt5_tiny.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["config"])
    cfg = umt5_config(**meta)
    inferred = umt5_config_from_state_dict(sd)
    for a in ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_layers", "relative_attention_num_buckets"):
        assert getattr(cfg, a) == getattr(inferred, a), a


def test_golden_is_sensitive_to_max_distance(golden):
    "The golden check of 14 would catch a wrong relative-position bucket setting."
    g, sd = golden
    err = _golden_err(umt5_from_state_dict(sd, umt5_config_from_state_dict(sd, max_dist=64), dtype=torch.float32), g)
    assert err > 1e-3  # the conformance check would catch a wrong bucket setting


def test_load_original_pth_and_safetensors(golden, tmp_path):
    g, sd = golden
    torch.save(sd, tmp_path / "enc.pth")
    save_file(sd, str(tmp_path / "enc.safetensors"))
    ref = _hidden(umt5_from_state_dict(sd, dtype=torch.float32), g)
    for p in ("enc.pth", "enc.safetensors"):
        m = load_umt5_original(tmp_path / p, dtype=torch.float32)
        assert torch.equal(_hidden(m, g), ref)
        assert all(t.device.type == "cpu" and not t.requires_grad for t in m.parameters())
    bf = load_umt5_original(tmp_path / "enc.pth")
    assert bf.shared.weight.dtype == torch.bfloat16  # the default dtype
    assert bf.shared.weight.data_ptr() == bf.encoder.embed_tokens.weight.data_ptr()  # one copy of the embedding


def test_load_diffusers_folder(golden, tmp_path):
    g, sd = golden
    m = umt5_from_state_dict(sd, dtype=torch.float32)
    m.save_pretrained(tmp_path / "text_encoder")
    m2 = load_umt5(tmp_path / "text_encoder", dtype=torch.float32)
    assert torch.equal(_hidden(m2, g), _hidden(m, g))
    with pytest.raises(InfcamError, match="config.json"):
        load_umt5(tmp_path)


def test_convert_checks_every_name(golden):
    _, sd = golden
    with pytest.raises(InfcamError, match=r"unknown.*pos_embedding.embedding.weight"):
        convert_umt5_state_dict({**sd, "pos_embedding.embedding.weight": sd["blocks.0.pos_embedding.embedding.weight"]})
    with pytest.raises(InfcamError, match=r"missing.*blocks.2.ffn.fc1.weight.*token_embedding.weight"):
        convert_umt5_state_dict({k: v for k, v in sd.items() if k not in ("blocks.2.ffn.fc1.weight", "token_embedding.weight")})
    hf = convert_umt5_state_dict(sd)
    assert hf["shared.weight"] is hf["encoder.embed_tokens.weight"] is sd["token_embedding.weight"]


def test_shape_mismatch_is_reported(golden):
    _, sd = golden
    cfg = umt5_config(vocab=200, dim=64, dim_attn=64, dim_ffn=128, num_heads=4, num_layers=3)
    with pytest.raises(InfcamError, match="does not match the config"):
        umt5_from_state_dict(sd, cfg)


def test_manifest_full_size_meta():
    from transformers import UMT5EncoderModel
    manifest = json.loads((DATA / "manifests" / "umt5_xxl_encoder_original.json").read_text())
    with torch.device("meta"):
        model = UMT5EncoderModel(umt5_config())
    orig = {k: list(v.shape) for k, v in umt5_to_original(model.state_dict()).items()}
    assert len(manifest) == 242
    assert orig == manifest


class _Evil:
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (io.open, (self.marker, "w"))  # creates a file when unpickled


def test_malicious_pickle_refused(tmp_path):
    "14 shows the refusal; here also the message, and that the payload is live (so the check cannot pass vacuously)."
    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(2), "x": _Evil(marker)}, tmp_path / "evil.pth")
    with pytest.raises(InfcamError) as e:
        load_umt5_original(tmp_path / "evil.pth")
    msg = str(e.value)
    assert "refused" in msg and "evil.pth" in msg and "\n" not in msg and len(msg) < 500
    assert not marker.exists()
    # the payload is live: an unsafe load would have created the file
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert marker.exists()


def test_read_state_dict_errors(tmp_path):
    with pytest.raises(InfcamError, match="umT5 encoder checkpoint not found: .*nope.pth"):
        load_umt5_original(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InfcamError, match="junk.pth"):
        read_state_dict(tmp_path / "junk.pth")
    torch.save({"state_dict": {"a": torch.ones(1)}}, tmp_path / "wrapped.pth")
    assert list(read_state_dict(tmp_path / "wrapped.pth")) == ["a"]
    torch.save({"a": [1, 2]}, tmp_path / "notflat.pth")
    with pytest.raises(InfcamError, match="flat dict"):
        read_state_dict(tmp_path / "notflat.pth")


def test_clean_prompt():
    assert clean_prompt("  a\tcat \n\n on&nbsp;a   sofa &amp;amp; more ") == "a cat on a sofa & more"
    assert clean_prompt("") == ""


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from transformers import UMT5EncoderModel
    tok = build_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "umt5", TEXTS)
    torch.manual_seed(0)
    cfg = umt5_config(vocab=len(tok), dim=32, dim_attn=32, dim_ffn=48, num_heads=2, num_layers=2)
    return TextEncoder(UMT5EncoderModel(cfg).eval(), tok, text_len=24, cache_size=2)


def test_tokenizer_local_only(tmp_path):
    with pytest.raises(InfcamError, match="tokenizer folder not found"):
        load_tokenizer(tmp_path / "google" / "umt5-xxl")
    tok = build_tiny_tokenizer(tmp_path / "t", TEXTS)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert load_tokenizer(tmp_path / "t")("a cat").input_ids == tok("a cat").input_ids


def test_encode_shapes_and_zero_padding(encoder):
    encoder.clear_cache()
    ids, mask = encoder.tokenize(["a cat", TEXTS[1]])
    assert ids.shape == mask.shape == (2, 24)
    out = encoder.encode(["a cat", TEXTS[1]])
    assert out.shape == (2, 24, 32) and out.dtype == torch.float32
    for b in range(2):
        n = int(mask[b].sum())
        assert ids[b, n - 1] == 1 and (ids[b, n:] == 0).all()  # </s> then padding
        assert (out[b, n:] == 0).all() and (out[b, :n].abs().sum(-1) > 0).all()


def test_truncation(encoder):
    long = " ".join(TEXTS * 3)
    ids, mask = encoder.tokenize([long])
    assert mask.all() and ids[0, -1] == 1
    assert encoder.encode(long).shape == (1, 24, 32)


def test_cleaning_and_cache(encoder):
    encoder.clear_cache()
    a = encoder.encode(["a dog runs"])
    b = encoder.encode(["  a  dog\n runs  "])  # same cleaned prompt: cache hit, identical result
    assert torch.equal(a, b) and (encoder.hits, encoder.misses) == (1, 1)
    c = encoder.encode(["a dog runs", "a cat", "a dog runs"])  # duplicates are encoded once
    assert (encoder.hits, encoder.misses) == (2, 2)
    assert torch.equal(c[0], c[2]) and torch.equal(c[0], a[0])
    # batch composition does not change a prompt's encoding
    fresh = TextEncoder(encoder.model, encoder.tokenizer, text_len=24, cache_size=0)
    torch.testing.assert_close(fresh.encode(["a cat"])[0], c[1], atol=1e-5, rtol=0)
    assert fresh.encode("a cat").shape == (1, 24, 32) and len(fresh._cache) == 0
    # LRU eviction at cache_size=2
    encoder.encode(["sunset"])
    assert list(encoder._cache) == ["a cat", "sunset"]
    misses = encoder.misses
    assert torch.equal(encoder.encode(["a dog runs"]), a) and encoder.misses == misses + 1  # evicted, recomputed
    c[1].zero_()  # results are copies: the cache is not affected
    assert not torch.equal(encoder.encode(["a cat"])[0], c[1])


def test_text_encoder_load(golden, tmp_path):
    g, sd = golden
    build_tiny_tokenizer(tmp_path / "tok", TEXTS, vocab_size=40)
    torch.save({k: v.to(torch.bfloat16) for k, v in sd.items()}, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    te = TextEncoder.load(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth", tmp_path / "tok", dtype=torch.float32, text_len=16)
    assert te.dim == 64 and te.dtype == torch.float32 and te.device.type == "cpu"
    assert te.encode(["a cat sits"]).shape == (1, 16, 64)
