#!/usr/bin/env python
"""The GPU check: one command for the day a device is lent. Random full-size weights; nothing is downloaded.

    python bench/gpu.py --out gpu_check                             # one H100/H200 (meant to fit in 8 minutes; not yet timed)
    python bench/gpu.py --preset tiny --size 9x32x48 --out /tmp/gc   # the CPU path (CI runs it: it cannot rot)

Writes OUT/gpu_check.json and OUT/gpu_check.md. Each section is timed, and a failing section is recorded with its
error while the others go on:
1. forward: one InfCamDiT forward (one denoising step without CFG: batch 1 = target and source) at the clip size, in
   bf16 on CUDA, per attention backend installed (`sdpa` always; `flash3` when flash_attn_interface imports): median
   of 3 after a warm-up, its FLOPs counted by torch's FlopCounterMode, and the fraction of the bf16 dense peak
   (--peak-tflops; 989 for an H100/H200 SXM).
2. intrinsics: `estimate_intrinsics(method='selfcal')` on a clip rendered along a pan (CPU work, as in generate).
3. generate: `bench/generate.py` in a child process, 20 steps per memory mode at the size with the real DiT and
   the Wan VAE (random weights): wall time and peak GPU memory per mode (needs diffusers).
4. train: 3 optimizer steps of the model at the size, bf16-mixed on CUDA, with gradient checkpointing, through
   Lightning with DeepSpeed stage 1 and with DDP (one device), each saving a checkpoint, then resuming from it for
   one more step (the resume is checked: it must start at step 3).
5. mini: the mini benchmark's training step (preset mini + `SMALL_MODEL`, its batch and latents, backbone frozen,
   bf16 autocast on CUDA as `bf16-mixed`, AdamW) and one denoising forward, in seconds: how many training steps a GPU
   run of `infcam bench mini --steps N` (issue 11) can afford in the minutes a lent device gives.

The device machine (Python 3.12) has torch, lightning and transformers, but not fastcore (every infcam module needs
it), diffusers, PyAV, ftfy or DeepSpeed. `bash bench/device_wheels.sh` downloads them here, for the device's Python,
into the repository's ignored `wheels/` folder (about 46 MB; the device tool's `carry: ["wheels"]` brings it); on the
device, first:
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site wheels/*.whl &&
    DS_BUILD_OPS=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation --upgrade --target /tmp/site \
        wheels/deepspeed-*.tar.gz && export PYTHONPATH=/tmp/site:$PWD
(rehearsed on the CPU in a virtual environment holding only what the device has: every section ran).
"""
import argparse, json, math, os, shutil, statistics, subprocess, sys, tempfile, time, traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))


def parse_size(s):
    F_, H, W = (int(v) for v in s.lower().split('x'))
    return F_, H, W


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()


def random_dit(preset, dev, dtype):
    "A full InfCamDiT of `preset`, random weights, materialised directly on `dev` (no host copy for the real size)."
    from infcam.models import WanConfig, InfCamDiT
    with torch.device('meta'): m = InfCamDiT(WanConfig.preset(preset))
    m = m.to_empty(device=dev)
    g = torch.Generator(device=dev).manual_seed(0)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.ndim == 1 and 'norm' in n: p.fill_(1.)
            else: p.normal_(0, 0.02, generator=g)
    return m.to(dtype).eval()


def dit_inputs(m, size, dev, dtype):
    from infcam.cameras import num_latent_frames
    F_, H, W = size
    c = m.config
    f, h, w = num_latent_frames(F_), H // 8, W // 8
    g = torch.Generator(device=dev).manual_seed(1)
    x = lambda *s: torch.randn(*s, generator=g, device=dev, dtype=dtype)
    K = torch.tensor([[W * 0.8, W * 0.8, W / 2, H / 2]], device=dev)
    E = torch.eye(3, 4, device=dev).reshape(1, 1, 12).expand(1, f, 12).contiguous()
    return (x(1, c.in_dim, f, h, w), x(1, c.in_dim, f, h, w), torch.tensor([500.], device=dev), x(1, c.text_len, c.text_dim),
            K, K, E)


def section_forward(a, dev, dtype):
    from torch.utils.flop_counter import FlopCounterMode
    from infcam.models.wan import ATTENTION_BACKENDS
    m = random_dit(a.preset, dev, dtype)
    inp = dit_inputs(m, parse_size(a.size), dev, dtype)
    rows = []
    for backend in ATTENTION_BACKENDS:
        try: m.set_attention_backend(backend)
        except Exception as e:
            rows.append(dict(backend=backend, skipped=' '.join(str(e).split())[:200])); continue
        with torch.no_grad():
            m(*inp); sync(dev)                                        # warm-up: kernels, RoPE tables
            ts = []
            for _ in range(3):
                t0 = time.perf_counter(); m(*inp); sync(dev); ts.append(time.perf_counter() - t0)
            with FlopCounterMode(display=False) as fc: m(*inp)
        secs, flops = statistics.median(ts), fc.get_total_flops()
        rows.append(dict(backend=backend, seconds=secs, tflops=flops / 1e12, achieved_tflops=flops / secs / 1e12,
                         roofline=flops / secs / (a.peak_tflops * 1e12) if dev.type == 'cuda' else None))
    del m
    return dict(preset=a.preset, size=a.size, dtype=str(dtype), rows=rows)


def section_intrinsics(a, dev, dtype):
    from infcam.cameras import preset
    from infcam.intrinsics import estimate_intrinsics, default_intrinsics
    from infcam.render import demo_scene, render_view
    F_, H, W = parse_size(a.size)
    F_ = min(F_, 33)                                                  # rendering is host work: a shorter clip will do
    K = default_intrinsics(H, W)
    c2w = preset('pan_left', F_, full=True)
    t0 = time.perf_counter()
    scene = demo_scene(0)
    clip = torch.cat([render_view(scene, K, c2w[i:i + 1], H, W)[0] for i in range(F_)])
    t_render = time.perf_counter() - t0
    t0 = time.perf_counter()
    est = estimate_intrinsics(clip, 'selfcal', fallback=True)
    return dict(frames=F_, render_seconds=t_render, seconds=time.perf_counter() - t0, true_fx=float(K[0]),
                estimated_fx=float(est.K4[0]) if hasattr(est, 'K4') else None, method=getattr(est, 'method', None))


def section_generate(a, dev, dtype):
    if dev.type != 'cuda':
        cmd = [sys.executable, str(ROOT / 'bench' / 'generate.py'), '--device', 'cpu', '--configs', 'tiny',
               '--sizes', a.size, '--steps', str(a.steps), '--threads', '1']
    else:
        cmd = [sys.executable, str(ROOT / 'bench' / 'generate.py'), '--device', 'cuda', '--real', '--configs', '',
               '--sizes', a.size, '--steps', str(a.steps)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.generate_timeout)
    if p.returncode: raise RuntimeError(f"bench/generate.py failed ({p.returncode}): {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    return dict(command=' '.join(cmd), seconds=time.perf_counter() - t0, table=p.stdout.strip())


class RandomLatents(torch.utils.data.Dataset):
    "Training items of the right shapes (random latents and text states): the cost is the real one."
    def __init__(self, cfg, size, n=8):
        from infcam.cameras import num_latent_frames
        F_, H, W = size
        self.shape, self.cfg, self.n, self.HW = (cfg.in_dim, num_latent_frames(F_), H // 8, W // 8), cfg, n, (H, W)
    def __len__(self): return self.n
    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        H, W = self.HW
        K = torch.tensor([W * 0.8, W * 0.8, W / 2, H / 2])
        E = torch.eye(3, 4).reshape(1, 12).expand(self.shape[1], 12).clone()
        return dict(target=torch.randn(self.shape, generator=g), source=torch.randn(self.shape, generator=g), K_src=K, K_tgt=K,
                    extrinsics=E, context=torch.randn(self.cfg.text_len, self.cfg.text_dim, generator=g), caption='')


def section_train(a, dev, dtype):
    import importlib.util
    from infcam.models import WanConfig
    from infcam.training import InfCamModule, fit
    cfg = WanConfig.preset(a.preset)
    ds = RandomLatents(cfg, parse_size(a.size))
    rows = []
    for strategy in ('deepspeed_stage_1', 'ddp'):
        if strategy.startswith('deepspeed') and importlib.util.find_spec('deepspeed') is None:
            rows.append(dict(strategy=strategy, skipped='deepspeed is not installed (see the wheels note)')); continue
        if strategy.startswith('deepspeed') and dev.type != 'cuda':
            rows.append(dict(strategy=strategy, skipped="Lightning runs DeepSpeed on CUDA only")); continue
        run = Path(tempfile.mkdtemp(prefix=f'gpucheck-{strategy}-'))
        kw = dict(strategy=strategy, precision='bf16-mixed' if dev.type == 'cuda' else '32-true', accelerator=dev.type,
                  devices=1, every=3, keep_last=1, plot=False, progress=False)
        try:
            if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            module = InfCamModule(a.preset, verbose=False, gradient_checkpointing=True)
            t_build = time.perf_counter() - t0
            t0 = time.perf_counter(); fit(module, ds, run, max_steps=3, **kw); sync(dev)
            t3 = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == 'cuda' else None
            del module
            resumed = InfCamModule(a.preset, verbose=False, gradient_checkpointing=True)
            t0 = time.perf_counter(); fit(resumed, ds, run, max_steps=4, **kw); sync(dev)
            t_resume = time.perf_counter() - t0
            import pandas as pd                                       # the resumed session's log starts where the first stopped
            logs = sorted(run.glob('logs/csv/version_*/metrics.csv'), key=lambda p: int(p.parent.name.split('_')[1]))
            first = int(pd.read_csv(logs[-1])['step'].min()) if len(logs) == 2 else None
            ok = first == 3 and resumed.start_step == 4
            rows.append(dict(strategy=strategy, build_seconds=t_build, seconds_3_steps=t3, peak_gib=peak,
                             resume_seconds=t_resume, resumed_from=first, resume_ok=ok))
            del resumed
        except Exception as e:
            rows.append(dict(strategy=strategy, error=' '.join(f"{type(e).__name__}: {e}".split())[:300]))
        finally:
            shutil.rmtree(run, ignore_errors=True)             # its checkpoints are GBs at full size
        if dev.type == 'cuda': torch.cuda.empty_cache()
    return dict(preset=a.preset, size=a.size, rows=rows)


def section_mini(a, dev, dtype):
    from infcam.benchmark import SMALL_MODEL, BenchConfig
    from infcam.cameras import num_latent_frames
    from infcam.training import InfCamModule
    from train_step import batch                                     # bench/train_step.py: the benchmark's batch shapes
    bc = BenchConfig()
    module = InfCamModule('mini', verbose=False, lr=bc.lr, shift=bc.shift, prediction=bc.prediction, **SMALL_MODEL).to(dev)
    params = [p for p in module.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=bc.lr)
    f, h, w = num_latent_frames(bc.num_frames), bc.height // 8, bc.width // 8     # PixelCodec(4, 8)
    b = {k: v.to(dev) for k, v in batch(module.config, bc.batch_size, f, h, w).items()}
    g = torch.Generator().manual_seed(0)
    steps, warm = (20, 3) if dev.type == 'cuda' else (2, 1)           # the CPU path only has to run
    def train_step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == 'cuda'):
            loss = module.loss(b, g)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        return loss.detach()
    for _ in range(warm): train_step()                                   # warm-up (kernels, allocator)
    sync(dev); t0 = time.perf_counter()
    for _ in range(steps): loss = train_step()
    sync(dev); s_step = (time.perf_counter() - t0) / steps
    m, one = module.model.eval(), {k: v[:1] for k, v in b.items()}
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == 'cuda'):
        fwd = lambda: m(one['target'], one['source'], torch.tensor([500.], device=dev), one['context'], one['K_src'],
                        one['K_tgt'], one['extrinsics'])
        fwd(); sync(dev); t0 = time.perf_counter()
        for _ in range(steps): fwd()
        sync(dev); s_fwd = (time.perf_counter() - t0) / steps
    if not math.isfinite(float(loss)): raise RuntimeError(f"the mini training loss is {float(loss)}")
    return dict(batch=bc.batch_size, latents=f"{module.config.in_dim}x{f}x{h}x{w}", trainable=len(params),
                seconds_per_train_step=s_step, train_steps_per_10_min=int(600 / s_step), seconds_per_forward=s_fwd,
                seconds_per_clip=s_fwd * bc.gen_steps, note=f"{steps} timed steps after {warm} warm-up; a clip = "
                f"{bc.gen_steps} forwards (cfg 1), without decoding")


def markdown(res):
    f = lambda v, d=2: '—' if v is None or (isinstance(v, float) and not math.isfinite(v)) else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
    out = [f"# GPU check: {res['device']}", '', f"torch {res['torch']}, preset {res['preset']}, size {res['size']}, "
           f"{res['seconds']:.0f} s in all", '']
    for name, sec in res['sections'].items():
        out.append(f"## {name} ({sec.get('section_seconds', 0):.0f} s)")
        if 'error' in sec: out += ['', f"failed: {sec['error']}", '']; continue
        if name == 'forward':
            out += ['', '| backend | s / forward | TFLOP per forward | TFLOP/s | of bf16 peak |', '|---|---|---|---|---|']
            for r in sec['rows']:
                out.append(f"| {r['backend']} | skipped: {r['skipped']} | | | |" if 'skipped' in r else
                           f"| {r['backend']} | {f(r['seconds'], 3)} | {f(r['tflops'], 4)} | {f(r['achieved_tflops'], 3)} | {f(r['roofline'])} |")
        elif name == 'train':
            out += ['', '| strategy | 3 steps s | peak GiB | resume (1 step) s | resumed from |', '|---|---|---|---|---|']
            for r in sec['rows']:
                if 'skipped' in r or 'error' in r: out.append(f"| {r['strategy']} | {r.get('skipped') or 'failed: ' + r['error']} | | | |")
                else: out.append(f"| {r['strategy']} | {f(r['seconds_3_steps'], 1)} | {f(r['peak_gib'], 1)} | {f(r['resume_seconds'], 1)} | "
                                 f"{r['resumed_from']}{'' if r['resume_ok'] else ' (WRONG)'} |")
        elif name == 'generate':
            out += ['', '```', sec['table'], '```']
        else:
            out += ['', '```', json.dumps({k: v for k, v in sec.items() if k != 'section_seconds'}, indent=1), '```']
        out.append('')
    return '\n'.join(out) + '\n'


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default='gpu_check', help='folder of gpu_check.json and gpu_check.md')
    ap.add_argument('--preset', default='wan2.1-t2v-1.3b', help="DiT preset (CPU path: 'tiny')")
    ap.add_argument('--size', default='81x480x832', help='FRAMESxHEIGHTxWIDTH of the clip')
    ap.add_argument('--steps', type=int, default=20, help='denoising steps of the generate section')
    ap.add_argument('--sections', default='forward,intrinsics,generate,train,mini')
    ap.add_argument('--peak-tflops', type=float, default=989., help='bf16 dense peak of the GPU (H100/H200 SXM: 989)')
    ap.add_argument('--generate-timeout', type=int, default=300)
    a = ap.parse_args(argv)
    dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dtype = torch.bfloat16 if dev.type == 'cuda' else torch.float32
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    res = dict(device=torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu', torch=torch.__version__,
               preset=a.preset, size=a.size, sections={})
    t_all = time.perf_counter()
    for name in [s.strip() for s in a.sections.split(',') if s.strip()]:
        fn = globals().get(f'section_{name}')
        if fn is None: sys.exit(f"unknown section {name!r}")
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try: sec = fn(a, dev, dtype)
        except Exception as e:
            sec = dict(error=' '.join(f"{type(e).__name__}: {e}".split())[:500], traceback=traceback.format_exc()[-2000:])
        sec['section_seconds'] = time.perf_counter() - t0
        res['sections'][name] = sec
        res['seconds'] = time.perf_counter() - t_all
        (out / 'gpu_check.json').write_text(json.dumps(res, indent=1, default=str))   # what ran so far survives a kill
        (out / 'gpu_check.md').write_text(markdown(res))
        print(markdown(dict(res, sections={name: sec})).split('\n', 3)[-1], flush=True)
    failed = [n for n, s in res['sections'].items() if 'error' in s or any('error' in r or r.get('resume_ok') is False for r in s.get('rows', []))]
    print(f"wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'}" + (f"; failed: {', '.join(failed)}" if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__': sys.exit(main())
