import io
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import infcam.core
import infcam.text
import infcam.vae
from infcam.core import InfcamError
from infcam.models import InfCamConfig, InfCamDiT, WanConfig, WanDiT
from infcam.weights import (WeightsSpec, check_weights, convert_checkpoint, dit_from_diffusers, dit_to_diffusers,
                            expected_tensors, find_dit_prefix, find_weights, infer_dit_config, load_dit,
                            load_infcam_checkpoint, read_dit_checkpoint, read_tensors, safetensors_header,
                            save_safetensors)
from infcam.testing import make_tiny_release

DATA = Path(__file__).parent / "data"
TINY = WanConfig.preset("tiny")
SPEC = WeightsSpec.tiny()


def _anon_mb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon")) / 1024


def _rss_mb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024


def _peak(fn, mem=_anon_mb):
    "Run fn; return (result, peak growth of `mem` in MB), sampled every 0.2 ms."
    r0, pk, stop = mem(), [0.0], threading.Event()

    def sample():
        while not stop.is_set():
            pk[0] = max(pk[0], mem() - r0)
            time.sleep(2e-4)

    th = threading.Thread(target=sample)
    th.start()
    try:
        out = fn()
    finally:
        stop.set()
        th.join()
    return out, max(pk[0], mem() - r0)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    "A complete tiny release in the original layout (base DiT, InfCam ckpt, VAE, umT5, tokenizer)."
    return make_tiny_release(tmp_path_factory.mktemp("orig") / "models")


@pytest.fixture(scope="module")
def release_diffusers(tmp_path_factory):
    return make_tiny_release(tmp_path_factory.mktemp("diff") / "models", layout="diffusers", infcam=False)


def _copy(release, tmp_path):
    dst = tmp_path / "models"
    shutil.copytree(release, dst)
    return dst, dst / "Wan2.1-T2V-1.3B"


def _tiny_infcam_sd(seed=0):
    torch.manual_seed(seed)
    return {k: v.to(torch.bfloat16) for k, v in InfCamDiT(TINY).state_dict().items()}


# ---------------------------------------------------------------- the refactor
def test_safe_reader_lives_in_core():
    assert infcam.text.read_state_dict is infcam.core.read_state_dict
    assert infcam.vae.read_state_dict is infcam.core.read_state_dict


def test_weights_import_is_light():
    code = ("import sys, infcam.weights; bad = [m for m in ('diffusers', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------- expected tensors = manifests
@pytest.mark.parametrize("component,manifest", [
    ("dit", "wan2.1_t2v_1.3b_dit.json"), ("infcam", "infcam_wan2.1_t2v_1.3b_dit.json"),
    ("vae", "wan2.1_vae_original.json"), ("text_encoder", "umt5_xxl_encoder_original.json")])
def test_expected_tensors_equal_manifests(component, manifest):
    man = {k: tuple(v) for k, v in json.loads((DATA / "manifests" / manifest).read_text()).items()}
    exp = expected_tensors(component, WeightsSpec.released())
    assert exp == man


def test_manifest_totals():
    rel = WeightsSpec.released()
    n = lambda c: sum(torch.Size(s).numel() for s in expected_tensors(c, rel).values())
    assert (len(expected_tensors("dit", rel)), n("dit")) == (825, 1_418_996_800)
    assert (len(expected_tensors("infcam", rel)), n("infcam")) == (1275, 1_774_273_600)


def test_diffusers_dit_names_match_diffusers():
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    with torch.device("meta"):
        ours = WanDiT(TINY).state_dict()
        theirs = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=24, in_channels=16,
                                       out_channels=16, text_dim=64, freq_dim=32, ffn_dim=192, num_layers=2,
                                       cross_attn_norm=True, eps=1e-6).state_dict()
    for k, v in ours.items():
        (dk, dv), = convert_wan_transformer_to_diffusers({k: v}).items()
        assert dit_to_diffusers(k) == dk and dit_from_diffusers(dk) == k
        assert tuple(theirs[dk].shape) == tuple(v.shape)
    assert set(theirs) == {dit_to_diffusers(k) for k in ours}
    assert expected_tensors("dit", SPEC, "diffusers") == {k: tuple(v.shape) for k, v in theirs.items()}


# ---------------------------------------------------------------- check_weights
def test_complete_folder_is_usable(release):
    rep = check_weights(release, SPEC)
    assert rep.usable and rep.problems == []
    assert {k: c.status for k, c in rep.components.items()} == dict.fromkeys(
        ("dit", "infcam", "vae", "text_encoder", "tokenizer"), "ok")
    assert rep["infcam"].path.name == "step35000.ckpt" and rep["infcam"].tensors == 99
    assert rep["dit"].dtypes == {torch.float32: 69} and rep["infcam"].dtypes == {torch.bfloat16: 99}
    text = str(rep)
    assert "usable for generation" in text and "NOT" not in text and "InfCam/step35000.ckpt" in text


def test_pointing_at_the_wan_folder_itself(release):
    rep = check_weights(release / "Wan2.1-T2V-1.3B", SPEC, infcam_checkpoint=release / "InfCam" / "step35000.ckpt")
    assert rep.usable and rep.problems == []
    rep = check_weights(release / "Wan2.1-T2V-1.3B", SPEC)
    assert rep["infcam"].status == "missing" and not rep.usable    # the base DiT alone: no camera control
    assert rep.usable_base_only
    assert "step35000.ckpt" in rep.problems[0]


def test_diffusers_layout_is_usable(release_diffusers):
    rep = check_weights(release_diffusers, SPEC)
    assert rep.usable_base_only and not rep.usable                   # this release has no InfCam checkpoint
    assert {k: c.layout for k, c in rep.components.items() if c.ok} == dict.fromkeys(
        ("dit", "vae", "text_encoder", "tokenizer"), "diffusers")
    assert [c.status for c in rep.components.values()].count("ok") == 4


def test_released_spec_reports_every_shape(release):
    rep = check_weights(release)
    assert not rep.usable
    assert rep["dit"].status == rep["vae"].status == rep["text_encoder"].status == "wrong"
    assert any("dim 96 (expected 1536)" in p and "num_layers 2 (expected 30)" in p for p in rep["infcam"].problems)
    assert any("blocks.0.attn.q.weight found (64, 64) expected (4096, 4096)" in p for p in rep["text_encoder"].problems)


@pytest.mark.parametrize("victim,component,expected_file", [
    ("Wan2.1_VAE.pth", "vae", "Wan2.1_VAE.pth"),
    ("models_t5_umt5-xxl-enc-bf16.pth", "text_encoder", "models_t5_umt5-xxl-enc-bf16.pth"),
    ("google", "tokenizer", "google/umt5-xxl/")])
def test_missing_file_is_reported(release, tmp_path, victim, component, expected_file):
    root, wan = _copy(release, tmp_path)
    p = wan / victim
    shutil.rmtree(p) if p.is_dir() else p.unlink()
    rep = check_weights(root, SPEC)
    assert not rep.usable and rep[component].status == "missing"
    assert [p for p in rep.problems if expected_file in p and "missing" in p]
    assert all(c.ok for k, c in rep.components.items() if k != component)


def test_the_infcam_checkpoint_is_enough(release, tmp_path):
    root, wan = _copy(release, tmp_path)
    (wan / "diffusion_pytorch_model.safetensors").unlink()
    rep = check_weights(root, SPEC)
    assert rep.usable and rep["dit"].status == "missing" and not rep.usable_base_only
    shutil.rmtree(root / "InfCam")
    rep = check_weights(root, SPEC)
    assert not rep.usable and not rep.usable_base_only
    assert any("diffusion_pytorch_model.safetensors" in p for p in rep.problems)
    assert any("step35000.ckpt" in p for p in rep.problems)


def test_wrong_shapes_are_reported(release, tmp_path):
    root, wan = _copy(release, tmp_path)
    t5 = torch.load(wan / "models_t5_umt5-xxl-enc-bf16.pth", weights_only=True)
    t5["blocks.1.ffn.fc1.weight"] = t5["blocks.1.ffn.fc1.weight"][:100]
    del t5["blocks.0.norm2.weight"]
    t5["extra.weight"] = torch.zeros(3)
    torch.save(t5, wan / "models_t5_umt5-xxl-enc-bf16.pth")
    dit = load_file(wan / "diffusion_pytorch_model.safetensors")
    dit["blocks.1.self_attn.q.weight"] = torch.zeros(96, 48)
    save_safetensors(dit, wan / "diffusion_pytorch_model.safetensors")
    rep = check_weights(root, SPEC)
    assert rep["text_encoder"].status == "wrong" and rep["dit"].status == "wrong"
    assert not rep.usable                              # the InfCam DiT is fine, the text encoder is not
    probs = rep.problems
    assert "text encoder: 1 tensor with the wrong shape: blocks.1.ffn.fc1.weight found (100, 64) expected (128, 64)" in probs
    assert "text encoder: 1 tensor missing: blocks.0.norm2.weight" in probs
    assert "text encoder: 1 unexpected tensor: extra.weight" in probs
    assert any("blocks.1.self_attn.q.weight found (96, 48) expected (96, 96)" in p for p in probs)


def test_wrong_shapes_make_it_unusable(release, tmp_path):
    root, wan = _copy(release, tmp_path)
    vae = torch.load(wan / "Wan2.1_VAE.pth", weights_only=True)
    vae["decoder.head.2.bias"] = torch.zeros(4)
    torch.save(vae, wan / "Wan2.1_VAE.pth")
    rep = check_weights(root, SPEC)
    assert not rep.usable and rep["vae"].status == "wrong"
    assert "VAE: 1 tensor with the wrong shape: decoder.head.2.bias found (4,) expected (3,)" in rep.problems


def test_truncated_and_garbage_files(release, tmp_path):
    root, wan = _copy(release, tmp_path)
    raw = (wan / "diffusion_pytorch_model.safetensors").read_bytes()
    (wan / "diffusion_pytorch_model.safetensors").write_bytes(raw[: len(raw) // 2])
    (root / "InfCam" / "step35000.ckpt").write_bytes(b"<html>rate limited</html>")
    rep = check_weights(root, SPEC)
    assert rep["dit"].status == rep["infcam"].status == "unreadable" and not rep.usable
    assert any("truncated" in p for p in rep["dit"].problems)
    assert any("not a readable PyTorch checkpoint" in p for p in rep["infcam"].problems)


def test_unknown_layout_names_expected_files(tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.bin").write_bytes(b"x")
    rep = check_weights(tmp_path, SPEC)
    assert not rep.usable and all(c.status == "missing" for c in rep.components.values())
    text = "\n".join(rep.problems)
    for f in ("diffusion_pytorch_model.safetensors", "step35000.ckpt", "Wan2.1_VAE.pth",
              "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/", "transformer/"):
        assert f in text
    with pytest.raises(InfcamError, match="weights folder not found"):
        check_weights(tmp_path / "nope")
    with pytest.raises(InfcamError, match="is a file"):
        check_weights(tmp_path / "weights" / "model.bin")


def test_sharded_dit(release, tmp_path):
    root, wan = _copy(release, tmp_path)
    sd = load_file(wan / "diffusion_pytorch_model.safetensors")
    (wan / "diffusion_pytorch_model.safetensors").unlink()
    keys = list(sd)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[:30],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[30:]}
    for name, ks in shards.items():
        save_safetensors({k: sd[k] for k in ks}, wan / name)
    index = {"metadata": {}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}
    (wan / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    rep = check_weights(root, SPEC)
    assert rep["dit"].ok and rep["dit"].tensors == 69
    model = load_dit(wan / "diffusion_pytorch_model.safetensors.index.json", torch.float32, num_heads=4)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    (wan / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    assert check_weights(root, SPEC)["dit"].status == "unreadable"


@pytest.fixture
def load_calls(monkeypatch):
    "The keyword arguments of every `torch.load` call made during the test."
    calls, real_load = [], torch.load
    def spy(*a, **kw):
        calls.append(kw)
        return real_load(*a, **kw)
    monkeypatch.setattr(torch, "load", spy)
    return calls


def test_check_reads_no_tensor_data(tmp_path, load_calls):
    big = {f"w{i}": torch.randn(1000, 2500) for i in range(10)}          # 100 MB
    torch.save(big, tmp_path / "big.ckpt")
    save_safetensors(big, tmp_path / "big.safetensors")
    del big
    for f in ("big.ckpt", "big.safetensors"):
        (t, info), grew = _peak(lambda: read_tensors(tmp_path / f), _rss_mb)
        assert t["w9"].is_meta and t["w9"].shape == (1000, 2500)
        assert grew < 10, (f, grew)                                        # << 100 MB
    assert load_calls == [dict(map_location="meta", weights_only=True, mmap=True)]


def test_check_does_not_load_data(release, load_calls):
    "Names and shapes come from headers only; the values read are the DiT files', memory-mapped, weights only."
    assert check_weights(release, SPEC, values=False).usable
    assert len(load_calls) == 3 and all(c["map_location"] == "meta" and c["weights_only"] for c in load_calls)
    load_calls.clear()
    assert check_weights(release, SPEC).usable                      # + the InfCam checkpoint's values (a pickle here)
    data = [c for c in load_calls if c["map_location"] != "meta"]
    assert len(load_calls) == 4 and len(data) == 1 and data[0]["mmap"] and data[0]["weights_only"]


# ---------------------------------------------------------------- the InfCam checkpoint
def test_step_ckpt_loads_weights_only(tmp_path, monkeypatch):
    ref = _tiny_infcam_sd()
    torch.save(ref, tmp_path / "step35000.ckpt")
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: calls.append(kw) or real_load(*a, **kw))
    sd = load_infcam_checkpoint(tmp_path / "step35000.ckpt", num_heads=4)
    assert calls and all(c["weights_only"] is True for c in calls)
    assert list(sd) == list(ref) and all(torch.equal(sd[k], v) for k, v in ref.items())


@pytest.mark.parametrize("wrap,prefix,stripped", [
    (None, "", []),
    ("state_dict", "model.", ["wrapper 'state_dict'", "prefix 'model.'"]),
    ("module", "module.", ["wrapper 'module'", "prefix 'module.'"]),
    ("model", "dit.", ["wrapper 'model'", "prefix 'dit.'"]),
    (None, "_forward_module.pipe.dit.", ["prefix '_forward_module.pipe.dit.'"]),
    ("lightning", "model.", ["wrapper 'state_dict'", "prefix 'model.'"])])
def test_wrappers_and_prefixes_are_stripped(tmp_path, wrap, prefix, stripped):
    ref = _tiny_infcam_sd()
    sd = {prefix + k: v for k, v in ref.items()}
    obj = (sd if wrap is None else
           {"state_dict": sd, "epoch": 3, "global_step": 35000, "optimizer_states": []} if wrap == "lightning" else {wrap: sd})
    torch.save(obj, tmp_path / "w.ckpt")
    ck = read_dit_checkpoint(tmp_path / "w.ckpt", num_heads=4, device="cpu")
    assert ck.ok and ck.kind == "infcam" and ck.stripped == stripped and ck.config == TINY
    assert list(ck.state_dict) == list(ref) and all(torch.equal(ck.state_dict[k], v) for k, v in ref.items())
    assert load_infcam_checkpoint(tmp_path / "w.ckpt", TINY).keys() == ref.keys()


def test_ambiguous_or_foreign_checkpoints(tmp_path):
    ref = _tiny_infcam_sd()
    torch.save({**{f"a.{k}": v for k, v in ref.items()}, **{f"b.{k}": v for k, v in ref.items()}}, tmp_path / "two.ckpt")
    with pytest.raises(InfcamError, match="prefixes 'a.', 'b.'"):
        load_infcam_checkpoint(tmp_path / "two.ckpt", TINY)
    torch.save({"encoder.conv1.weight": torch.zeros(2)}, tmp_path / "vae.ckpt")
    with pytest.raises(InfcamError, match="not a Wan/InfCam DiT"):
        load_infcam_checkpoint(tmp_path / "vae.ckpt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.ckpt")
    with pytest.raises(InfcamError, match="flat dict of named tensors"):
        load_infcam_checkpoint(tmp_path / "meta.ckpt")


def test_prefix_choice_keeps_other_dit_as_unexpected(tmp_path):
    ref = _tiny_infcam_sd()
    torch.save({**{f"a.{k}": v for k, v in ref.items()}, "b.patch_embedding.weight": ref["patch_embedding.weight"]},
               tmp_path / "two.ckpt")
    with pytest.raises(InfcamError, match="1 unexpected"):
        load_infcam_checkpoint(tmp_path / "two.ckpt", TINY, prefix="a.")


def test_a_wan_checkpoint_is_not_an_infcam_checkpoint(tmp_path):
    torch.save(WanDiT(TINY).state_dict(), tmp_path / "wan.ckpt")
    with pytest.raises(InfcamError, match=r"does not fit InfCamDiT: .*missing \(blocks.0.cam_encoder.bias"):
        load_infcam_checkpoint(tmp_path / "wan.ckpt", TINY)


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (io.open, (str(marker), "w"))

    torch.save({**_tiny_infcam_sd(), "blocks.0.modulation0": Evil()}, tmp_path / "step35000.ckpt")
    for fn in (lambda: load_infcam_checkpoint(tmp_path / "step35000.ckpt", TINY),
               lambda: convert_checkpoint(tmp_path / "step35000.ckpt", tmp_path / "out.safetensors", num_heads=4),
               lambda: load_dit(tmp_path / "step35000.ckpt", num_heads=4)):
        with pytest.raises(InfcamError) as e:
            fn()
        msg = str(e.value)
        assert "refused" in msg and "step35000.ckpt" in msg and "\n" not in msg and len(msg) < 500
        assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()
    rep = check_weights(tmp_path, SPEC)
    assert rep["infcam"].status == "unreadable" and "refused" in rep["infcam"].problems[0]
    assert not marker.exists()
    torch.load(tmp_path / "step35000.ckpt", weights_only=False)          # the payload is live
    assert marker.exists()


# ---------------------------------------------------------------- config from shapes
def test_config_is_inferred_from_shapes():
    with torch.device("meta"):
        rel = {k: v.shape for k, v in InfCamDiT(WanConfig.preset("wan2.1-t2v-1.3b")).state_dict().items()}
    assert infer_dit_config(rel) == WanConfig.preset("wan2.1-t2v-1.3b")
    odd = WanConfig.preset("tiny", dim=144, ffn_dim=300, num_heads=6, num_layers=3, in_dim=4, out_dim=8,
                           text_dim=40, freq_dim=16, patch_size=(1, 2, 1))
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanDiT(odd).state_dict().items()}
    assert infer_dit_config(shapes, num_heads=6) == odd
    with pytest.raises(InfcamError, match="pass num_heads"):
        infer_dit_config(shapes)
    # renaming every key the same way changes nothing: only shapes and the block count matter
    assert find_dit_prefix(["x.y.patch_embedding.weight"]) == "x.y."


def test_wrong_config_is_described(tmp_path):
    torch.save(_tiny_infcam_sd(), tmp_path / "step35000.ckpt")
    with pytest.raises(InfcamError, match=r"holds a different DiT: num_layers 2 \(expected 3\)"):
        load_infcam_checkpoint(tmp_path / "step35000.ckpt", WanConfig.preset("tiny", num_layers=3))
    bad = _tiny_infcam_sd()
    bad["blocks.1.cam_encoder.weight"] = torch.zeros(96, 12)
    torch.save(bad, tmp_path / "bad.ckpt")
    with pytest.raises(InfcamError, match=r"blocks.1.cam_encoder.weight \(96, 12\) vs expected \(96, 16\)"):
        load_infcam_checkpoint(tmp_path / "bad.ckpt", TINY)


# ---------------------------------------------------------------- conversion
def test_convert_roundtrip(tmp_path):
    ref = _tiny_infcam_sd()
    torch.save({"module": {f"dit.{k}": v for k, v in ref.items()}}, tmp_path / "step35000.ckpt")
    (tmp_path / "conv").mkdir()
    out = convert_checkpoint(tmp_path / "step35000.ckpt", tmp_path / "conv", num_heads=4)
    assert out == tmp_path / "conv" / "step35000.safetensors"
    hdr, meta = safetensors_header(out)
    assert InfCamConfig.from_dict(meta["config"]) == InfCamConfig.of(TINY) and meta["kind"] == "infcam"
    assert meta["stripped"] == "wrapper 'module'; prefix 'dit.'" and meta["source"] == "step35000.ckpt"
    assert {dt for dt, _ in hdr.values()} == {torch.bfloat16}
    direct = InfCamDiT(TINY)
    direct.load_state_dict({k: v.float() for k, v in ref.items()})
    loaded = load_dit(out, torch.float32)                               # the config comes from the metadata
    assert type(loaded) is InfCamDiT and loaded.config == InfCamConfig.of(TINY)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in direct.state_dict().items())
    raw = load_file(out)
    assert set(raw) == set(ref) and all(torch.equal(raw[k], v) for k, v in ref.items())
    assert list(tmp_path.glob("conv/.*")) == []                          # no temporary left


def test_convert_refuses_overwrite_and_casts(tmp_path):
    torch.save(_tiny_infcam_sd(), tmp_path / "step35000.ckpt")
    out = convert_checkpoint(tmp_path / "step35000.ckpt", tmp_path / "a.safetensors", num_heads=4)
    before = out.read_bytes()
    with pytest.raises(InfcamError, match="already exists"):
        convert_checkpoint(tmp_path / "step35000.ckpt", out, num_heads=4)
    assert out.read_bytes() == before
    convert_checkpoint(tmp_path / "step35000.ckpt", out, dtype="fp32", overwrite=True, num_heads=4)
    assert {dt for dt, _ in safetensors_header(out)[0].values()} == {torch.float32}
    with pytest.raises(InfcamError, match="must end in .safetensors"):
        convert_checkpoint(tmp_path / "step35000.ckpt", tmp_path / "b.pt", num_heads=4)
    with pytest.raises(InfcamError, match="unknown dtype"):
        convert_checkpoint(tmp_path / "step35000.ckpt", tmp_path / "c.safetensors", dtype="int3", num_heads=4)
    with pytest.raises(InfcamError, match="not found"):
        convert_checkpoint(tmp_path / "nope.ckpt", tmp_path / "d.safetensors")


def test_convert_is_atomic(tmp_path, monkeypatch):
    import infcam.weights as w
    torch.save(_tiny_infcam_sd(), tmp_path / "step35000.ckpt")
    real = w.save_safetensors

    def dies(tensors, path, *a, **kw):
        Path(path).write_bytes(b"half a file")
        raise RuntimeError("killed")

    monkeypatch.setattr(w, "save_safetensors", dies)
    with pytest.raises(RuntimeError):
        convert_checkpoint(tmp_path / "step35000.ckpt", tmp_path / "out.safetensors", num_heads=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step35000.ckpt"]
    monkeypatch.setattr(w, "save_safetensors", real)


def test_converted_file_is_found_and_preferred(release, tmp_path):
    root, _ = _copy(release, tmp_path)
    convert_checkpoint(root / "InfCam" / "step35000.ckpt", root / "InfCam", num_heads=4)
    rep = check_weights(root, SPEC)
    assert rep.usable and rep["infcam"].path.name == "step35000.safetensors"
    assert any("step35000.ckpt" in n for n in rep["infcam"].notes)


# ---------------------------------------------------------------- loading
def test_load_dit_bf16_close_to_float32(tmp_path):
    g = load_file(DATA / "golden" / "dit_tiny.safetensors")
    sd = {k[len("state_dict."):]: v for k, v in g.items() if k.startswith("state_dict.")}
    inp = {k[len("input."):]: v for k, v in g.items() if k.startswith("input.")}
    save_safetensors(sd, tmp_path / "g.safetensors", {"config": json.dumps(TINY.to_dict())})
    m32, m16 = load_dit(tmp_path / "g.safetensors", torch.float32), load_dit(tmp_path / "g.safetensors")
    assert {p.dtype for p in m16.parameters()} == {torch.bfloat16} and not m16.training
    assert m16.embed_time(inp["timestep"], 1)[1].dtype == torch.float32    # time embedding in float32
    with torch.no_grad():
        v32, v16 = m32(**inp), m16(**inp).float()
    assert (v32 - g["output.v_tgt"]).abs().max() < 1e-4
    rel = ((v16 - v32).norm() / v32.norm()).item()
    assert rel < 0.03, rel


def test_load_dit_assigns_without_a_second_copy(tmp_path):
    cfg = WanConfig.preset("tiny", dim=512, ffn_dim=2048, num_layers=4, text_dim=4096)
    with torch.device("meta"):
        shapes = WanDiT(cfg).state_dict()
    save_safetensors({k: torch.randn(v.shape) for k, v in shapes.items()}, tmp_path / "m.safetensors",
                     {"config": json.dumps(cfg.to_dict())})
    bf16_mb = sum(v.numel() for v in shapes.values()) * 2 / 2 ** 20
    with torch.device("meta"):
        WanDiT(TINY)                                                    # one-time lazy initialisation, not per model
    model, grew = _peak(lambda: load_dit(tmp_path / "m.safetensors", torch.bfloat16))
    assert grew < 1.2 * bf16_mb + 8, (grew, bf16_mb)                    # float32 file read one tensor at a time
    assert not any(p.is_meta for p in model.parameters())


def test_load_dit_from_folders(release, release_diffusers):
    m = load_dit(release, torch.float32, num_heads=4)
    assert type(m) is InfCamDiT                                         # the InfCam checkpoint wins
    ref = torch.load(release / "InfCam" / "step35000.ckpt", weights_only=True)
    assert all(torch.equal(m.state_dict()[k], v.float()) for k, v in ref.items())
    base = load_dit(release_diffusers / "Wan2.1-T2V-1.3B-Diffusers" / "transformer", torch.float32)
    orig = load_file(release / "Wan2.1-T2V-1.3B" / "diffusion_pytorch_model.safetensors")
    assert type(base) is WanDiT and base.config.num_heads == 4           # heads from the diffusers config.json
    assert all(torch.equal(base.state_dict()[k], v) for k, v in orig.items())
    with pytest.raises(InfcamError, match="no DiT weights"):
        load_dit(release / "Wan2.1-T2V-1.3B" / "google")


def test_find_weights(release):
    found = find_weights(release)
    assert {k: (v[0], v[1].relative_to(release).as_posix()) for k, v in found.items()} == {
        "dit": ("original", "Wan2.1-T2V-1.3B/diffusion_pytorch_model.safetensors"),
        "infcam": ("original", "InfCam/step35000.ckpt"),
        "vae": ("original", "Wan2.1-T2V-1.3B/Wan2.1_VAE.pth"),
        "text_encoder": ("original", "Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth"),
        "tokenizer": ("original", "Wan2.1-T2V-1.3B/google/umt5-xxl")}
