"""InfCamPipeline beyond the examples of nbs/30_pipeline.ipynb (which nbdev_test runs): what the conditioning changes,
trajectories as tensors, intrinsics and zoom, PreparedInputs loading nothing again, CFG batching, negative prompts,
the memory modes' code paths, validation before any model runs, from_pretrained. 30 already asserts the output's
shape and range, same seed = same output, the default 24 mm K_src, a prepared run equal to a direct one, the main
size/trajectory errors, and the memory modes' equality on its own model; those are checked there only."""
import copy

import pytest
import torch
from transformers import UMT5EncoderModel

from infcam.cameras import focal_mm_to_px
from infcam.core import InfcamError
from infcam.models import InfCamDiT, WanConfig
from infcam.pipeline import MEMORY_MODES, WAN_NEGATIVE_PROMPT, BlockOffload, InfCamPipeline, RandomTextEncoder
from infcam.scheduler import FlowMatchScheduler
from infcam.testing import TOKENIZER_TEXTS
from infcam.text import TextEncoder, build_tiny_tokenizer, umt5_config
from infcam.trajectories import load_trajectory
from infcam.vae import PixelCodec

F_, H, W = 9, 32, 48
KW = dict(num_frames=F_, height=H, width=W, steps=3, progress=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    "The models here are tiny: one thread is as fast, and immune to oversubscription on a busy machine."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_model(seed=0):
    torch.manual_seed(seed)
    m = InfCamDiT(WanConfig.preset("tiny", in_dim=192, out_dim=192))
    with torch.no_grad():  # non-zero camera layers, so cameras and intrinsics change the output
        for n, p in m.named_parameters():
            if "cam_encoder" in n or "zero_conv" in n: p.normal_(0, 0.05)
    return m.eval()


class Counter:
    "Counts forwards (and the batch of each) of a model through a forward pre-hook."
    def __init__(self, model):
        self.batches = []
        self.h = model.register_forward_pre_hook(lambda m, a: self.batches.append(a[0].shape[0]))


@pytest.fixture(scope="module")
def model(): return make_model()


@pytest.fixture(scope="module")
def clip():
    g = torch.Generator().manual_seed(1)
    return torch.rand(F_, 3, H, W, generator=g)


def pipe_for(model, memory="resident", text=None):
    return InfCamPipeline(model, PixelCodec(), text or RandomTextEncoder(64), FlowMatchScheduler(), device="cpu", memory=memory)


def test_another_seed_another_output(model, clip):
    "(30 checks that the same seed gives the same output.)"
    p = pipe_for(model)
    a, c = p(clip, "a street", "arc_left", seed=3, **KW), p(clip, "a street", "arc_left", seed=4, **KW)
    assert (a - c).abs().mean() > 1e-2


def test_conditioning_matters(model, clip):
    p = pipe_for(model)
    base = p(clip, "a street", "pan_right", **KW)
    for kw in (dict(trajectory="pan_left"), dict(prompt="a forest"), dict(zoom=1.5),
               dict(intrinsics=[60., 60., W / 2, H / 2])):
        args = dict(prompt="a street", trajectory="pan_right", **KW) | kw
        out = p(clip, args.pop("prompt"), args.pop("trajectory"), **args)
        assert (out - base).abs().max() > 1e-4, kw


def test_trajectory_tensor_equals_preset(model, clip):
    p = pipe_for(model)
    c2w = load_trajectory("tilt_up", F_)
    a = p(clip, "x", "tilt_up", **KW)
    assert torch.equal(a, p(clip, "x", c2w, **KW))
    assert torch.equal(a, p(clip, "x", c2w[:, :3], **KW))              # (F, 3, 4) works too
    assert torch.equal(a, p(clip, "x", torch.cat([c2w, c2w]), **KW))   # extra poses are ignored


def test_zoom_and_explicit_default_intrinsics(model, clip):
    "Zoom scales the focal only; the default lens given explicitly changes nothing (30 checks the default K_src)."
    p = pipe_for(model)
    d = p.prepare(clip, "pan_right", num_frames=F_, height=H, width=W, zoom=2.0)
    f = focal_mm_to_px(24, H, W)
    assert torch.allclose(d.K_tgt, torch.tensor([2 * f, 2 * f, W / 2, H / 2]))   # zoom scales the focal only
    explicit = p(clip, "x", "pan_right", intrinsics=[f, f, W / 2, H / 2], **KW)
    assert torch.equal(explicit, p(clip, "x", "pan_right", **KW))


def test_prepared_inputs_load_once(model, clip, monkeypatch, tmp_path):
    "A PreparedInputs is generated from as it is: no trajectory or clip is loaded again, and its size, lens and path are fixed."
    import infcam.pipeline as P
    from infcam.video import write_video
    p, path = pipe_for(model), write_video(tmp_path / "clip.mp4", clip)
    prep = p.prepare(path, "arc_left", num_frames=F_, height=H, width=W, zoom=1.5)
    assert (prep.num_frames, prep.height, prep.width, prep.num_latent_frames) == (F_, H, W, 3)
    monkeypatch.setattr(P, "load_trajectory", lambda *a, **k: pytest.fail("trajectory loaded again"))
    monkeypatch.setattr(P, "read_video", lambda *a, **k: pytest.fail("video loaded again"))
    a = p(prep, "a street", steps=3, progress=False)
    monkeypatch.undo()
    assert torch.equal(a, p(path, "a street", "arc_left", zoom=1.5, **KW))
    for kw in (dict(trajectory="pan_left"), dict(num_frames=F_), dict(zoom=1.5), dict(intrinsics=[1., 1, 1, 1])):
        with pytest.raises(InfcamError, match="prepare"): p(prep, "x", **kw)
    with pytest.raises(InfcamError, match="trajectory is required"): p(clip, "x", **KW)
    big = P.PreparedInputs(torch.rand(F_, 3, H, 40), prep.K_src, prep.K_tgt, prep.extrinsics)
    with pytest.raises(InfcamError, match="width 40"): p(big, "x", progress=False)       # checked against this pipeline


def test_cfg_batched_equals_unbatched(model, clip):
    p = pipe_for(model)
    cnt = Counter(model)
    try:
        a = p(clip, "a street", "pan_right", cfg=5.0, cfg_batch=True, **KW)
        assert cnt.batches == [2] * 3
        cnt.batches.clear()
        b = p(clip, "a street", "pan_right", cfg=5.0, cfg_batch=False, **KW)
        assert cnt.batches == [1] * 6
        cnt.batches.clear()
        c = p(clip, "a street", "pan_right", cfg=1.0, **KW)                 # no guidance: one pass per step
        assert cnt.batches == [1] * 3
    finally: cnt.h.remove()
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert (a - c).abs().max() > 1e-4


def test_negative_prompt_used(model, clip):
    te = RandomTextEncoder(64)
    seen = []
    enc = te.encode
    te.encode = lambda prompts: (seen.append(list(prompts)), enc(prompts))[1]
    p = pipe_for(model, text=te)
    a = p(clip, "a street", "pan_right", **KW)
    assert seen == [["a street", WAN_NEGATIVE_PROMPT]]
    b = p(clip, "a street", "pan_right", negative_prompt="blurry", **KW)
    assert (a - b).abs().max() > 1e-4
    seen.clear(); p(clip, "a street", "pan_right", cfg=1, **KW)
    assert seen == [["a street"]]                                          # cfg=1 never encodes the negative prompt


def test_memory_modes_equal(tmp_path):
    """resident, model_offload and block_offload run their code paths and give bit-identical outputs, each on its own
    copy of the model and of a tiny umT5 text encoder (so no mode can leave state behind for the next). block_offload
    loads every DiT block once per forward and every umT5 block once per encoded batch (prompt and negative prompt
    together); a second call with the same prompts hits the text cache and loads no umT5 block.

    What this does NOT prove: on the CPU the offload modes move weights from the CPU to the CPU, so no memory is saved
    and no host-device transfer (pinned copies, non_blocking copies, CUDA streams) is exercised; the outputs are equal
    because the same float32 arithmetic runs on the same device. Peak GPU memory and time per mode on a real device
    are measured by bench/generate.py (run by bench/gpu.py when a GPU is lent), not here. (30's memory-mode cell makes
    the same equality check on one shared model.)"""
    g = torch.Generator().manual_seed(2)
    clip = torch.rand(F_, 3, H, W, generator=g)
    tok = build_tiny_tokenizer(tmp_path / "tok", TOKENIZER_TEXTS + [WAN_NEGATIVE_PROMPT], vocab_size=160)
    torch.manual_seed(6)
    umt5 = UMT5EncoderModel(umt5_config(vocab=len(tok), dim=64, dim_attn=64, dim_ffn=128, num_heads=4, num_layers=2)).eval()
    outs, base = {}, make_model(5)
    for mode in MEMORY_MODES:
        m, te = copy.deepcopy(base), TextEncoder(copy.deepcopy(umt5), tok)
        p = pipe_for(m, mode, te)
        outs[mode] = p(clip, "a street", "arc_right", **KW)
        if mode != "block_offload":
            assert p.offload is None and p.text_offload is None
            continue
        assert p.offload.loads == 3 * m.config.num_layers               # one load per block per forward
        assert p.text_offload.loads == len(te.blocks) == 2               # one load per umT5 block for the one batch
        assert torch.equal(p(clip, "a street", "arc_right", **KW), outs[mode])
        assert p.text_offload.loads == 2 and p.offload.loads == 6 * m.config.num_layers   # cached prompts
        p.offload.remove(); p.text_offload.remove()
    assert torch.equal(outs["resident"], outs["model_offload"])
    assert torch.equal(outs["resident"], outs["block_offload"])


def test_block_offload_hooks_move_and_drop():
    """The hooks load each block before its forward, point it at its host copy again after, and stop when removed.
    On the CPU "load" and "host" are the same device: this checks the bookkeeping (the parameters end on the very host
    tensors, the count, the removal), not a transfer."""
    m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    ref = m(torch.ones(1, 3))
    bo = BlockOffload(list(m), "cpu", pin=False)
    host = [t for _, t in bo.host[m[0]]]
    out = m(torch.ones(1, 3))
    assert torch.equal(out, ref) and bo.loads == 2
    assert all(p.data_ptr() == h.data_ptr() for p, h in zip(m[0].parameters(), host))
    bo.remove(); m(torch.ones(1, 3)); assert bo.loads == 2


def test_callback_called_every_step(model, clip):
    "Step index, step count and latent shape per call (30 counts the calls)."
    calls = []
    pipe_for(model)(clip, "x", "pan_right", callback=lambda i, n, x: calls.append((i, n, tuple(x.shape))), **KW)
    assert calls == [(i, 3, (1, 192, 3, H // 8, W // 8)) for i in range(3)]


@pytest.mark.parametrize("kw, msg", [
    (dict(num_frames=80), "4k+1"),
    (dict(num_frames=0), "4k+1"),
    (dict(height=100), "multiple of 16"),
    (dict(width=40), "multiple of 16"),
    (dict(num_frames=13), "too short"),
    (dict(trajectory="spin_around"), "trajectory"),
    (dict(trajectory="/nonexistent/path.yaml"), "path.yaml"),
    (dict(trajectory=torch.eye(4).repeat(5, 1, 1)), "fewer than"),
    (dict(trajectory=torch.eye(3).repeat(9, 1, 1)), "(F, 4, 4)"),
    (dict(intrinsics=[100., 100., 0., 16.]), "positive"),
    (dict(intrinsics=[100., 100., 24.]), "4 numbers"),
    (dict(steps=0), "steps"),
    (dict(cfg=float("nan")), "cfg"),
    (dict(zoom=0), "zoom"),
    (dict(video=torch.rand(9, 4, H, W)), "(F, 3, H, W)"),
    (dict(video="/nonexistent/clip.mp4"), "not found"),
])
def test_validation_before_any_model(model, clip, kw, msg):
    "Each bad input is refused in one line before any text encoding or model forward (30 shows four of the messages)."
    te = RandomTextEncoder(64)
    p = pipe_for(model, text=te)
    cnt = Counter(model)
    args = dict(video=clip, prompt="x", trajectory="pan_right", **KW) | kw
    try:
        with pytest.raises(InfcamError, match=None) as e:
            p(args.pop("video"), args.pop("prompt"), args.pop("trajectory"), **args)
    finally: cnt.h.remove()
    assert msg in str(e.value) and "\n" not in str(e.value)
    assert cnt.batches == [] and te.calls == 0


def test_constructor_checks(model):
    with pytest.raises(InfcamError, match="192"):
        InfCamPipeline(InfCamDiT(WanConfig.preset("tiny")), PixelCodec(), RandomTextEncoder(64), device="cpu")
    with pytest.raises(InfcamError, match="memory mode"):
        InfCamPipeline(model, PixelCodec(), RandomTextEncoder(64), device="cpu", memory="swap")


def test_video_resized_and_from_file(model, clip, tmp_path):
    from infcam.video import write_video
    p = pipe_for(model)
    big = torch.nn.functional.interpolate(clip, size=(2 * H, 2 * W), mode="bilinear")
    assert p(big, "x", "pan_right", **KW).shape == (F_, 3, H, W)
    path = write_video(tmp_path / "clip.mp4", clip)
    assert p(path, "x", "pan_right", **KW).shape == (F_, 3, H, W)


def test_varying_trajectory_zoom_warns(model, clip, monkeypatch):
    import infcam.pipeline as P
    c2w = load_trajectory("pan_right", F_)
    monkeypatch.setattr(P, "load_trajectory", lambda spec, n, with_zoom: (c2w, torch.linspace(1, 2, n)))
    p = pipe_for(model)
    with pytest.warns(UserWarning, match="mean over latent frames"):
        d = p.prepare(clip, "file.yaml", num_frames=F_, height=H, width=W)
    assert torch.allclose(d.K_tgt[0], d.K_src[0] * 1.5)


def test_from_pretrained_tiny_release(tmp_path, clip):
    from infcam.testing import make_tiny_release
    from infcam.weights import WeightsSpec
    make_tiny_release(tmp_path / "w")
    spec = WeightsSpec.tiny()
    p = InfCamPipeline.from_pretrained(tmp_path / "w", device="cpu", dtype=torch.float32, spec=spec,
                                       text_dtype=torch.float32)
    assert isinstance(p.model, InfCamDiT) and p.model.config.num_layers == spec.dit.num_layers
    out = p(clip[:5, :, :32, :32], "a cat sits on a red sofa", "pan_right", num_frames=5, height=32, width=32, steps=2,
            progress=False)
    assert out.shape == (5, 3, 32, 32) and torch.isfinite(out).all()
    with pytest.raises(InfcamError, match="not usable"):
        InfCamPipeline.from_pretrained(tmp_path / "w", device="cpu")                 # released shapes expected
    with pytest.raises(InfcamError):
        InfCamPipeline.from_pretrained(tmp_path / "missing", device="cpu")


# --- numerics='released': one test per choice of the published pipeline -------------------------------------------

def released(model=None, text=None):
    m = copy.deepcopy(model if model is not None else make_model())
    return InfCamPipeline(m, PixelCodec(), text or RandomTextEncoder(64), FlowMatchScheduler(), device="cpu",
                          numerics="released")


def test_released_dit_sees_bf16_timesteps(model, clip):
    "The published pipeline casts each time to the DiT's bf16: 937.5 arrives as 936, 833.33 as 832."
    import json
    from pathlib import Path
    golden = json.loads((Path(__file__).parent / "data/golden/scheduler.json").read_text())["inference_steps20_shift5"]
    seen = {}
    for mode in ("exact", "released"):
        p = released(model) if mode == "released" else pipe_for(copy.deepcopy(model))
        got = seen[mode] = []
        p.model.register_forward_pre_hook(lambda m, a: got.append(a[2].clone()))
        p(clip, "a street", "pan_left", **{**KW, "steps": 20}, cfg=1.0)
    rel, ex = torch.cat(seen["released"]), torch.cat(seen["exact"])
    assert rel.dtype == torch.bfloat16 and ex.dtype == torch.float32
    assert torch.equal(ex, torch.tensor(golden["timesteps"]))                           # exact: the float32 table
    assert torch.equal(rel, torch.tensor(golden["timesteps"]).to(torch.bfloat16))
    assert rel[[0, 5, 10]].float().tolist() == [1000.0, 936.0, 832.0] and ex[5] == 937.5


def test_released_dit_and_latents_in_bf16(model, clip):
    lat = []
    p = released(model)
    out = p(clip, "a street", "pan_left", **KW, callback=lambda i, n, x: lat.append(x))
    assert p.model.dtype == torch.bfloat16 and all(x.dtype == torch.bfloat16 for x in lat)
    with pytest.raises(InfcamError, match="bf16"):
        InfCamPipeline(copy.deepcopy(model), PixelCodec(), RandomTextEncoder(64), dtype=torch.float32, numerics="released")
    assert out.shape == (F_, 3, H, W) and out.dtype == torch.float32


def test_released_vae_is_bf16_and_tiled(model):
    from diffusers import AutoencoderKLWan
    from infcam.vae import WanVAECodec, WAN21_VAE_CONFIG
    torch.manual_seed(0)
    vae = AutoencoderKLWan.from_config(dict(WAN21_VAE_CONFIG, base_dim=8, z_dim=4, latents_mean=[0.] * 4,
                                            latents_std=[1.] * 4)).eval()
    codec = WanVAECodec(vae)
    assert not vae.use_tiling and vae.dtype == torch.float32
    cfg = WanConfig.preset("tiny", in_dim=4, out_dim=4, patch_size=(1, 2, 2))
    InfCamPipeline(InfCamDiT(cfg), codec, RandomTextEncoder(cfg.text_dim), device="cpu", numerics="released")
    assert vae.use_tiling and vae.dtype == torch.bfloat16
    assert (vae.tile_sample_min_height, vae.tile_sample_min_width) == (240, 416)          # 30 x 52 latents
    assert (vae.tile_sample_stride_height, vae.tile_sample_stride_width) == (120, 208)    # every 15 x 26


def test_released_prompts_cleaned_by_ftfy(tmp_path):
    "Both modes clean prompts as Wan does (ftfy, HTML unescaped twice, whitespace collapsed): mojibake reads as its text."
    from infcam.text import clean_prompt
    assert clean_prompt("cafÃ©  on a  &amp;amp; street") == "café on a & street"
    tok = build_tiny_tokenizer(tmp_path / "tok", TOKENIZER_TEXTS + ["café on a & street"], vocab_size=160)
    torch.manual_seed(6)
    umt5 = UMT5EncoderModel(umt5_config(vocab=len(tok), dim=64, dim_attn=64, dim_ffn=128, num_heads=4, num_layers=2)).eval()
    te = TextEncoder(umt5, tok)
    p = released(text=te)
    assert torch.equal(p.text_encoder.encode("cafÃ©  on a  &amp;amp; street"), p.text_encoder.encode("café on a & street"))


def test_released_frames_resized_then_cropped(model):
    "A 40x80 clip made 32x48: PIL resizes it to 32x64 (covering), then the centre 48 columns are kept."
    from infcam.video import pil_fit_frames, fit_frames
    g = torch.Generator().manual_seed(3)
    big = torch.rand(F_, 3, 40, 80, generator=g)
    r, e = released(model).prepare(big, "pan_left", **{k: KW[k] for k in ("num_frames", "height", "width")}), \
        pipe_for(copy.deepcopy(model)).prepare(big, "pan_left", **{k: KW[k] for k in ("num_frames", "height", "width")})
    assert torch.equal(r.frames, pil_fit_frames(big, H, W)) and torch.equal(e.frames, fit_frames(big, H, W))
    assert not torch.equal(r.frames, e.frames)
    from PIL import Image
    import numpy as np
    a = (big[0] * 255).round().byte().permute(1, 2, 0).numpy()
    want = np.asarray(Image.fromarray(a).resize((64, 32), Image.BILINEAR))[:, 8:56]
    assert torch.equal(r.frames[0], torch.from_numpy(want.copy()).permute(2, 0, 1).float() / 255)


def test_released_output_floored_to_8_bits(model, clip):
    lat = []
    p = released(model)
    out = p(clip, "a street", "pan_left", **KW, callback=lambda i, n, x: lat.append(x))
    dec = p.codec.decode(lat[-1]).float()[0].permute(1, 0, 2, 3)
    want = ((dec + 1) * 127.5).clamp(0, 255).floor() / 255
    assert torch.equal(out, want)
    assert not torch.equal(out, ((dec + 1) * 127.5).clamp(0, 255).round() / 255)          # floor, not round


def test_released_cameras_rounded_to_bf16(model, clip):
    "The published pipeline hands the DiT its intrinsics and extrinsics in bf16."
    seen = []
    p = released(model)
    p.model.register_forward_pre_hook(lambda m, a: seen.append((a[4], a[6])))
    p(clip, "a street", "pan_left", **KW, intrinsics=[50.1234, 50.1234, 24., 16.])
    K, E = seen[0]
    assert torch.equal(K, K.to(torch.bfloat16).float()) and torch.equal(E, E.to(torch.bfloat16).float())
    assert float(K[0, 0]) == float(torch.tensor(50.1234).to(torch.bfloat16))


def test_unknown_numerics_refused(model):
    with pytest.raises(InfcamError, match="unknown numerics"):
        InfCamPipeline(copy.deepcopy(model), PixelCodec(), RandomTextEncoder(64), numerics="fast")
