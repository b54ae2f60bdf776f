"""infcam.models beyond the examples of nbs/10_wan, 11_infcam_dit and 12_models (which nbdev_test runs): the one-stream
target forward, float32 throughout, the init rule in every block and from a state dict, per-sample batching, the
InfCam DiT in bf16 and with checkpointing, error messages. The notebooks already assert the golden outputs (11), both
full-size manifests (10, 11), the WanDiT's bf16 and checkpointing (10), config validation (10, 11) and the attention
reference (10); those are checked there only."""
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.overrides import TorchFunctionMode

from infcam.core import InfcamError
from infcam.models import WanConfig, InfCamConfig, WanDiT, InfCamDiT
from infcam.models.wan import rope_table, resolve_attention_backend

DATA = Path(__file__).parent / 'data'
GOLDEN = DATA / 'golden' / 'dit_tiny.safetensors'


@pytest.fixture(scope='module')
def golden():
    g = load_file(GOLDEN)
    with safe_open(GOLDEN, 'pt') as f: cfg = WanConfig.from_dict(f.metadata()['config'])
    sd = {k[len('state_dict.'):]: v for k, v in g.items() if k.startswith('state_dict.')}
    inp = {k[len('input.'):]: v for k, v in g.items() if k.startswith('input.')}
    return cfg, sd, inp, g['output.v_tgt'], g['output.v_src']


@pytest.fixture(scope='module')
def model(golden):
    cfg, sd, *_ = golden
    m = InfCamDiT(cfg).eval()
    m.load_state_dict(sd)
    return m


def test_golden_config_and_target_only_forward(golden, model):
    "The tiny config spelled out, and the target-only forward (11 checks both outputs against the golden file)."
    cfg, sd, inp, v_tgt, v_src = golden
    assert cfg == WanConfig(dim=96, ffn_dim=192, num_heads=4, num_layers=2, in_dim=16, out_dim=16, text_dim=64,
                            freq_dim=32, patch_size=(1, 2, 2), eps=1e-6) == WanConfig.preset('tiny')
    with torch.no_grad():
        out_t, out_s = model(**inp, return_source=True)
        only_t = model(inp['x_tgt'], inp['x_src'], inp['timestep'], inp['context'], inp['K_src'], inp['K_tgt'],
                       inp['extrinsics'])
    assert out_t.dtype == torch.float32 and out_t.shape == v_tgt.shape
    # without the source half the last block computes the target tokens only: the same numbers up to float rounding
    assert (only_t - out_t).abs().max() <= 1e-6 and (only_t - v_tgt).abs().max() <= 1e-4


def test_no_float64_in_forward(golden, model):
    "RoPE, time embedding, norms and the warp all stay in float32."
    *_, inp, _, _ = golden
    seen = set()

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor): seen.add(t.dtype)
            return out
    from infcam.models import wan
    wan.clear_rope_cache()                 # make the RoPE tables be computed under the watch
    with torch.no_grad(), Watch(): model(**inp)
    assert torch.float32 in seen and torch.float64 not in seen and torch.complex128 not in seen


def test_from_base_init_rule():
    """Every block, from a model or a state dict, copies not shared, and the first backward reaches the camera modules
    only (11 checks one block's copies, camera-blindness and the zero-output equivalence)."""
    torch.manual_seed(0)
    cfg = WanConfig.preset('tiny')
    base = WanDiT(cfg).eval()
    for src in (base, base.state_dict()):
        m = InfCamDiT.from_base(src, cfg).eval()
        for bb, mb in zip(base.blocks, m.blocks):
            for n, p in bb.self_attn.state_dict().items(): assert torch.equal(mb.self_attn_pre.state_dict()[n], p)
            assert torch.equal(mb.modulation0, bb.modulation)
            assert not any(p.any() for p in (*mb.cam_encoder.parameters(), *mb.zero_conv.parameters()))
            assert mb.self_attn_pre.q.weight.data_ptr() != bb.self_attn.q.weight.data_ptr()
        assert all(isinstance(p, torch.nn.Parameter) for p in m.parameters())
    B, F, h, w = 1, 3, 4, 6
    x, s = torch.randn(B, 16, F, h, w), torch.randn(B, 16, F, h, w)
    t, ctx = torch.tensor([700.]), torch.randn(B, 5, 64)
    K = torch.tensor([[40., 40., 24., 16.]])
    rot = torch.tensor([[0.98, 0., 0.199, 0.1, 0., 1., 0., 0., -0.199, 0., 0.98, 0.]]).expand(B, F, 12)
    m.train()
    trainable = m.freeze_base()
    assert len(trainable) == 15 * cfg.num_layers
    m(x, s, t, ctx, K, K, rot).square().mean().backward()
    for blk in m.blocks:                                         # camera-blind at first, but the first step reaches the camera modules
        assert blk.cam_encoder.weight.grad.abs().sum() > 0 and blk.zero_conv.weight.grad.abs().sum() > 0
        assert blk.self_attn.q.weight.grad is None


def test_cfg_and_per_sample_batch(golden, model):
    *_, inp, _, _ = golden
    two = lambda t: torch.cat([t, t])
    ext2 = torch.cat([inp['extrinsics'], torch.eye(3, 4).flatten().expand(1, 3, 12)])
    ctx2 = torch.cat([inp['context'], torch.zeros_like(inp['context'])])
    t2, Kt2 = torch.tensor([617., 250.]), torch.cat([inp['K_tgt'], inp['K_src']])
    with torch.no_grad():
        v = model(two(inp['x_tgt']), two(inp['x_src']), t2, ctx2, two(inp['K_src']), Kt2, ext2)
        for i in range(2):
            one = model(inp['x_tgt'], inp['x_src'], t2[i:i+1], ctx2[i:i+1], inp['K_src'], Kt2[i:i+1], ext2[i:i+1])
            assert torch.allclose(v[i:i+1], one, atol=1e-5)


def test_bf16_forward_close_to_fp32(golden, model):
    "The InfCam DiT (warp, camera encoder, triplet attention) in bf16; 10 checks the WanDiT."
    cfg, sd, inp, *_ = golden
    mb = InfCamDiT(cfg).eval()
    mb.load_state_dict(sd)
    mb.to(torch.bfloat16)
    with torch.no_grad(): vb, v = mb(**inp), model(**inp)
    assert vb.dtype == torch.bfloat16
    assert (vb.float() - v).abs().max() / v.abs().max() < 0.05


def test_gradient_checkpointing_same_grads(golden):
    "The InfCam blocks under checkpointing; 10 checks the WanDiT."
    cfg, sd, inp, *_ = golden
    grads = []
    for ckpt in (False, True):
        m = InfCamDiT(cfg).train(); m.gradient_checkpointing = ckpt
        m.load_state_dict(sd)
        m(**inp).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_ffn_chunk_same_outputs_and_grads(golden):
    "`model.ffn_chunk` (feed-forward in token chunks) changes memory, not results, with or without checkpointing."
    cfg, sd, inp, *_ = golden
    outs, grads = [], []
    for chunk, ckpt in ((None, False), (7, False), (7, True)):
        m = InfCamDiT(cfg).train(); m.load_state_dict(sd)
        m.ffn_chunk, m.gradient_checkpointing = chunk, ckpt
        out = m(**inp); out.square().mean().backward()
        outs.append(out.detach()); grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    for o, g in zip(outs[1:], grads[1:]):
        assert (o - outs[0]).abs().max() <= 1e-6 and torch.allclose(g, grads[0], atol=1e-6)


def test_wan_dit_input_errors():
    "(10 checks the forward's shape and CFG batching.)"
    torch.manual_seed(0)
    m = WanDiT(WanConfig.preset('tiny')).eval()
    x = torch.randn(2, 16, 2, 4, 6)
    with pytest.raises(InfcamError, match='not a multiple of the patch'): m(torch.randn(1, 16, 2, 5, 6), torch.tensor([1.]), torch.randn(1, 3, 64))
    with pytest.raises(InfcamError, match=r'expected \(B, L, 64\)'): m(x, torch.tensor([1., 2]), torch.randn(2, 3, 65))


def test_input_errors(golden, model):
    *_, inp, _, _ = golden
    with pytest.raises(InfcamError, match='extrinsics have shape'): model(**{**inp, 'extrinsics': inp['extrinsics'][:, :2]})
    with pytest.raises(InfcamError, match='K_tgt must have shape'): model(**{**inp, 'K_tgt': inp['K_tgt'][0]})
    with pytest.raises(InfcamError, match='differ in shape'): model(**{**inp, 'x_src': inp['x_src'][:, :, :2]})


def test_strict_load_errors(golden):
    "Unexpected keys and from_base on InfCam weights (10 checks the prefix hint and missing/wrong-shape on the WanDiT)."
    cfg, sd, *_ = golden
    m = InfCamDiT(cfg)
    bad = {k: v for k, v in sd.items() if 'zero_conv' not in k}
    bad['extra.weight'] = torch.zeros(1)
    bad['head.head.weight'] = torch.zeros(3, 96)
    with pytest.raises(InfcamError) as e: m.load_state_dict(bad)
    msg = str(e.value)
    assert '\n' not in msg and '4 missing (blocks.0.zero_conv.weight' in msg and '1 unexpected (extra.weight)' in msg
    assert 'head.head.weight (3, 96) vs (64, 96)' in msg
    with pytest.raises(InfcamError, match='base weights do not fit'): InfCamDiT.from_base(sd, cfg)   # InfCam keys are unexpected


def test_mini_preset():
    "(10 and 11 check the config validation.)"
    with torch.device('meta'): mini = InfCamDiT(WanConfig.preset('mini'))
    assert 1e6 < sum(p.numel() for p in mini.parameters()) < 1e7
    assert WanConfig.preset('mini').head_dim // 3 % 2 == 0


def test_attention_backends(monkeypatch):
    "sage when missing, and the model resolving INFCAM_ATTENTION when built (10 checks sdpa, flash3 and the reference)."
    try: __import__('sageattention')
    except ImportError:
        with pytest.raises(InfcamError, match='not installed'): resolve_attention_backend('sage')
    monkeypatch.setenv('INFCAM_ATTENTION', 'bogus')
    with pytest.raises(InfcamError, match='bogus'): WanDiT(WanConfig.preset('tiny'))   # the model resolves it when built


def test_rope_cache_and_warp_convention(golden):
    cfg, sd, inp, *_ = golden
    a = rope_table(3, 4, 6, 24)
    assert a[0].dtype == torch.float32                   # (10 checks that the table is cached)
    with torch.inference_mode(): rope_table(2, 3, 5, 24)
    from infcam.models.wan import apply_rope
    x = torch.randn(1, 30, 2, 24, requires_grad=True)    # tables made under inference_mode still work with autograd
    apply_rope(x, *rope_table(2, 3, 5, 24)).square().sum().backward()
    assert x.grad is not None
    m = InfCamDiT(InfCamConfig.of(cfg, warp_convention='exact')).eval()
    m.load_state_dict(sd)
    with torch.no_grad(): ve = m(**inp)
    assert 1e-4 < (ve - load_file(GOLDEN)['output.v_tgt']).abs().max() < 0.1
