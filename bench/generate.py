#!/usr/bin/env python
"""Wall time and peak memory of one whole generation (`InfCamPipeline.__call__`) per memory mode and resolution.

    python bench/generate.py                          # CPU: 'mini' DiT + PixelCodec, three sizes, 4 steps (about a minute)
    python bench/generate.py --threads 1              # the same with one torch thread (much steadier on a busy machine)
    python bench/generate.py --device cuda            # CUDA: 'mini' + PixelCodec at the CUDA sizes, 20 steps
    python bench/generate.py --device cuda --real     # add the real 1.3B DiT (bf16) + the Wan VAE, random weights
    python bench/generate.py --device cuda --real --configs '' --sizes 81x480x832 --modes block_offload

Every row runs one generation (encode, text, `--steps` Euler steps with CFG 5, decode) on a random source clip, with
random weights (the output is noise; the cost is the real one). The text encoder is `RandomTextEncoder`, a stand-in
with umT5's output shape: a random 5.7B umT5-XXL would cost 11 GB and encodes the two prompts once in any case.
The real DiT is built on the meta device and materialised directly where it lives (the GPU for 'resident', the host
for the offload modes), so 'resident' never holds a host copy.

Time: one warm-up generation at the smallest size (kernels, RoPE caches), then the wall time of the measured one;
the stage split (encode / denoise / decode) comes from `pipe.timings`.
Peak memory:
- CUDA: `torch.cuda.max_memory_allocated()` over the generation (weights that live on the GPU included) after
  `reset_peak_memory_stats()`; the offload modes' weights on the host are not counted (reported as 'host MiB').
- CPU: the process's resident-set high-water mark (`VmHWM`, reset via /proc/self/clear_refs) minus the resident
  set before the generation, i.e. what the generation added on top of the weights.
"""
import argparse, gc, os, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from infcam.models import WanConfig, InfCamDiT
from infcam.pipeline import InfCamPipeline, RandomTextEncoder, MEMORY_MODES
from infcam.scheduler import FlowMatchScheduler
from infcam.vae import PixelCodec
from memory import status_kb, reset_cpu_peak, maxrss_kb   # bench/memory.py

CPU_SIZES = ['17x64x112', '33x128x224', '41x128x224']
CUDA_SIZES = ['41x320x544', '81x480x832']
HEAD = f"{'device':6} {'model':16} {'codec':6} {'mode':14} {'size FxHxW':>12} {'steps':>5} {'wall s':>8} {'s/step':>7} " \
       f"{'enc s':>6} {'dec s':>6} {'peak MiB':>9}"




def build_dit(name, codec, where, dtype):
    "An InfCamDiT of preset `name` sized for `codec`, random weights, materialised directly on `where`."
    cfg = WanConfig.preset(name, in_dim=codec.latent_channels, out_dim=codec.latent_channels)
    with torch.device('meta'): m = InfCamDiT(cfg)
    m = m.to_empty(device=where)
    g = torch.Generator(device=where).manual_seed(0)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.ndim == 1 and ('norm' in n): p.fill_(1.)
            else: p.normal_(0, 0.02, generator=g)
    return m.to(dtype).eval()


def build_codec(kind, where):
    if kind == 'pixel': return PixelCodec()
    from diffusers import AutoencoderKLWan
    from infcam.vae import WAN21_VAE_CONFIG, WanVAECodec
    with torch.device(where): vae = AutoencoderKLWan.from_config(WAN21_VAE_CONFIG)
    return WanVAECodec(vae.float(), tiled=False)


def parse_size(s):
    try: F_, H, W = (int(v) for v in s.lower().split('x'))
    except ValueError: sys.exit(f"bad size {s!r}: expected FRAMESxHEIGHTxWIDTH, e.g. 81x480x832")
    return F_, H, W


def generate(pipe, size, steps, cfg_batch):
    F_, H, W = size
    clip = torch.rand(F_, 3, H, W, generator=torch.Generator().manual_seed(0))
    return pipe(clip, 'a city street, the camera arcs left', 'arc_left', num_frames=F_, height=H, width=W, steps=steps,
                cfg=5.0, seed=0, progress=False, cfg_batch=cfg_batch)


def measure(pipe, size, steps, cfg_batch, device):
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter(); generate(pipe, size, steps, cfg_batch); torch.cuda.synchronize()
        wall, peak = time.perf_counter() - t0, torch.cuda.max_memory_allocated() / 2**20
    else:
        rss0 = status_kb('VmRSS')
        ok = rss0 is not None and reset_cpu_peak()
        t0 = time.perf_counter(); generate(pipe, size, steps, cfg_batch); wall = time.perf_counter() - t0
        peak = (status_kb('VmHWM') - rss0) / 1024 if ok else float('nan')
    return wall, peak, dict(pipe.timings)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', choices=['cpu', 'cuda', 'all'], default='cpu', help="'all': CPU, and CUDA when present")
    ap.add_argument('--configs', default='mini', help="comma-separated DiT presets run with the PixelCodec")
    ap.add_argument('--real', action='store_true', help="also the real 'wan2.1-t2v-1.3b' with the Wan VAE (CUDA only)")
    ap.add_argument('--modes', default=','.join(MEMORY_MODES), help='comma-separated memory modes')
    ap.add_argument('--sizes', default=None, help='comma-separated FxHxW (default: per device)')
    ap.add_argument('--steps', type=int, default=None, help='Euler steps (default: 4 on CPU, 20 on CUDA)')
    ap.add_argument('--no-cfg-batch', action='store_true', help='run the two CFG passes one after the other')
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads (1 avoids oversubscription on a busy machine)')
    ap.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    devices = [d for d in ('cpu', 'cuda') if a.device in (d, 'all')]
    if 'cuda' in devices and not torch.cuda.is_available():
        if a.device == 'cuda': sys.exit('CUDA is not available')
        devices.remove('cuda')
    modes = [m for m in a.modes.split(',') if m]
    if bad := [m for m in modes if m not in MEMORY_MODES]: sys.exit(f"unknown memory mode(s) {bad}; choose from {MEMORY_MODES}")
    cfg_batch = not a.no_cfg_batch
    if not a.child and len(modes) > 1:
        # one process per memory mode, so that each peak is measured from a fresh allocator
        print(f"InfCamPipeline, CFG 5 {'batched' if cfg_batch else 'two passes'}, torch {torch.__version__}, "
              f"{a.threads or torch.get_num_threads()} CPU threads; random weights, RandomTextEncoder; one process per mode")
        print(HEAD); print('-' * len(HEAD), flush=True)
        args = list(argv if argv is not None else sys.argv[1:])
        for m in modes:
            subprocess.run([sys.executable, __file__, *args, '--modes', m, '--child'], check=True)
        return
    if not a.child:
        print(f"InfCamPipeline, CFG 5 {'batched' if cfg_batch else 'two passes'}, attention {os.environ.get('INFCAM_ATTENTION', 'sdpa')}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; random weights, RandomTextEncoder")
        print(HEAD); print('-' * len(HEAD))
    for dev in devices:
        device = torch.device(dev)
        steps = a.steps or (4 if dev == 'cpu' else 20)
        sizes = [parse_size(s) for s in (a.sizes.split(',') if a.sizes else (CPU_SIZES if dev == 'cpu' else CUDA_SIZES))]
        dtype = torch.float32 if dev == 'cpu' else torch.bfloat16
        runs = [(n, 'pixel') for n in a.configs.split(',') if n] + ([('wan2.1-t2v-1.3b', 'wan')] if a.real and dev == 'cuda' else [])
        for name, ckind in runs:
            for mode in modes:
                where = device if mode == 'resident' else torch.device('cpu')
                codec = build_codec(ckind, where)
                model = build_dit(name, codec, where, dtype)
                pipe = InfCamPipeline(model, codec, RandomTextEncoder(model.config.text_dim, device=where),
                                      FlowMatchScheduler(), device=device, memory=mode)
                generate(pipe, min(sizes, key=lambda s: s[0] * s[1] * s[2]), 1, cfg_batch)   # warm-up
                for size in sizes:
                    try: wall, peak, T = measure(pipe, size, steps, cfg_batch, device)
                    except torch.OutOfMemoryError:
                        print(f"{dev:6} {name:16} {ckind:6} {mode:14} {'x'.join(map(str, size)):>12} {steps:5d}  out of memory", flush=True)
                        torch.cuda.empty_cache(); continue
                    print(f"{dev:6} {name:16} {ckind:6} {mode:14} {'x'.join(map(str, size)):>12} {steps:5d} {wall:8.2f} "
                          f"{T['denoise'] / steps:7.3f} {T['encode']:6.2f} {T['decode']:6.2f} {peak:9.1f}", flush=True)
                if pipe.offload: pipe.offload.remove()
                if pipe.text_offload: pipe.text_offload.remove()
                del pipe, model, codec
                gc.collect()
                if dev == 'cuda': torch.cuda.empty_cache()


if __name__ == '__main__':
    main()
