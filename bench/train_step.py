#!/usr/bin/env python
"""The mini benchmark's training step (forward + backward) against an earlier version of the model, in one process.

    python bench/train_step.py                     # working tree vs 28bfd6c, the model when issue 15 was filed
    python bench/train_step.py --rev 7c878cd       # vs the model after issue 15's first two savings
    python bench/train_step.py --rev HEAD --repeat 7
    python bench/train_step.py --compile           # torch.compile (inductor) of the working tree's model vs eager

The step is `InfCamModule.loss(batch).backward()` as `infcam.train` runs it for the mini benchmark: preset 'mini'
with `infcam.benchmark.SMALL_MODEL` (PixelCodec latents: 17 frames of 64x112 -> 192 x 5 x 8 x 14, patch 1), batch
`BenchConfig.batch_size`, the backbone frozen (`freeze_base`: only InfCam's camera modules train), float32 on the CPU.
The old model is `infcam/models/{wan,infcam}.py` of `--rev` loaded as in `bench/dit_ab.py`. The default, 28bfd6c, is
the last commit before issue 15's first change (7bc6f9e); the model files did not change from fc960da (2026-11-23) to
then, so it is the model the issue measured ("today" in its targets). The old model gets the new model's weights and is swapped into the same `InfCamModule`, so both see the same
batch, noise and timestep. Steps alternate; single-thread CPU time (`time.thread_time`); the median and the best of
`--repeat` are reported with the ratio old / new (speed-up) and the largest difference of loss and gradients.
`--profile` also splits the new step's CPU time into attention (SDPA, forward and backward), matrix products and the
rest, which bounds what any further exact saving outside attention and the products could give.
`--compile` compares `torch.compile(model)` (inductor's fused CPU kernels) with the same model run eagerly instead of
with `--rev`, and prints the compile's wall time (its first step): whether fusing "the rest" pays for the compile.
"""
import argparse, statistics, sys, time
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dit_ab import old_module      # bench/dit_ab.py


def batch(cfg, B, f, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor([[0.9 * 8 * w, 0.9 * 8 * w, 4. * w, 4. * h]]).repeat(B, 1)
    ext = torch.eye(3, 4).flatten().repeat(B, f, 1)
    ang = torch.linspace(0, 0.3, f)
    ext[..., 0], ext[..., 2], ext[..., 8], ext[..., 10] = ang.cos(), ang.sin(), -ang.sin(), ang.cos()
    ext[..., 3] = torch.linspace(0, 0.5, f)
    lat = lambda: torch.randn(B, cfg.in_dim, f, h, w, generator=g)
    return dict(target=lat(), source=lat(), context=torch.randn(B, cfg.text_len, cfg.text_dim, generator=g),
                K_src=K, K_tgt=K * 1.1, extrinsics=ext)


def step(module, b, seed=1):
    module.model.zero_grad(set_to_none=True)
    loss = module.loss(b, torch.Generator().manual_seed(seed))
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in module.model.named_parameters() if p.grad is not None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rev', default='28bfd6c'); ap.add_argument('--repeat', type=int, default=5)
    ap.add_argument('--compile', action='store_true', help='compare torch.compile of the model with eager, not with --rev')
    ap.add_argument('--profile', action='store_true', help='split the new step into attention, matrix products and the rest')
    a = ap.parse_args()
    torch.set_num_threads(1)
    from infcam.benchmark import SMALL_MODEL, BenchConfig
    from infcam.training import InfCamModule
    bc = BenchConfig()
    module = InfCamModule('mini', verbose=False, **SMALL_MODEL)
    new, cfg = module.model, module.model.config
    with torch.no_grad():                        # camera modules non-zero, as after some training: every path works
        for blk in new.blocks: blk.zero_conv.weight.normal_(0, 0.02); blk.cam_encoder.weight.normal_(0, 0.02)
    if a.compile:                                # 'new' is the compiled model, 'old' the same model run eagerly
        old, new, what = new, torch.compile(new, dynamic=False), 'torch.compile (new) vs eager (old)'
    else:
        om = old_module(a.rev)
        old = om.InfCamDiT(om.InfCamConfig.from_dict(cfg.to_dict()) if hasattr(om, 'InfCamConfig') else om.WanConfig.from_dict(cfg.to_dict()))
        old.load_state_dict(new.state_dict()); old.freeze_base(); old.train()
        what = f'working tree vs {a.rev}'
    f, (h, w) = (bc.num_frames - 1) // 4 + 1, (bc.height // 8, bc.width // 8)     # PixelCodec(4, 8)
    b = batch(cfg, bc.batch_size, f, h, w)
    models = {'new': new, 'old': old}
    def run(name):
        module.model = models[name]
        t0 = time.thread_time(); out = step(module, b); return time.thread_time() - t0, out
    w0 = time.perf_counter()
    (_, (ln, gn)), (_, (lo, go)) = run('new'), run('old')      # warm-up (and the compile), and the differences
    first = time.perf_counter() - w0
    gn = {k.removeprefix('_orig_mod.'): v for k, v in gn.items()}
    gdiff = max(float((gn[k] - go[k]).abs().max()) for k in gn)
    assert set(gn) == set(go), 'the two models train different tensors'
    times = {'new': [], 'old': []}
    for _ in range(a.repeat):
        for name in ('old', 'new'): times[name].append(run(name)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    print(f"mini benchmark training step (preset mini + SMALL_MODEL, batch {bc.batch_size}, latents {cfg.in_dim}x{f}x{h}x{w}, "
          f"{len(gn)} trainable tensors), {what}; single-thread CPU s over {a.repeat} alternating steps\n")
    print('| | new s | old s | old / new (speed-up) |\n|---|---|---|---|')
    print(f"| median | {med['new']:.3f} | {med['old']:.3f} | {med['old'] / med['new']:.3f} |")
    print(f"| best | {best['new']:.3f} | {best['old']:.3f} | {best['old'] / best['new']:.3f} |")
    print(f"\n|loss new - old| = {abs(float(ln - lo)):.1e}, max |grad new - grad old| = {gdiff:.1e}")
    if a.compile: print(f"the first step of each (the compile included) took {first:.1f} s wall")
    if a.profile: profile_split(lambda: run('new'))


def profile_split(fn, steps=3):
    "The share of a step's self CPU time in attention kernels, in matrix products and in everything else."
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(steps): fn()
    parts = {'attention (SDPA)': 0., 'matrix products': 0., 'the rest': 0.}
    for e in p.key_averages():
        if not e.key.startswith('aten::'): continue
        k = ('attention (SDPA)' if 'scaled_dot_product' in e.key else
             'matrix products' if e.key in ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::baddbmm') else 'the rest')
        parts[k] += e.self_cpu_time_total
    total = sum(parts.values())
    print(f"\nwhere the new step's time goes (profiler, {steps} steps):\n\n| part | share |\n|---|---|")
    for k, v in parts.items(): print(f"| {k} | {v / total:.0%} |")
    rest = parts['the rest'] / total
    print(f"\nremoving all of 'the rest' would make the step at most {1 / (1 - rest):.2f}x faster")


if __name__ == '__main__': main()
