#!/usr/bin/env python
"""Forward time and peak memory of the InfCam DiT per configuration and latent size.

    python bench/dit.py                       # CPU: tiny and mini at a few sizes (about half a minute), and CUDA if present
    python bench/dit.py --device cuda --real  # add the real 1.3B model (CUDA only, bf16)
    python bench/dit.py --train               # forward + backward (gradient checkpointing on) instead of forward only

Every row runs one InfCamDiT forward on a batch of 1 (target and source, i.e. 2 videos through the network) at the
given latent size `(F, h, w)` (F latent frames, h = H/8, w = W/8), with random weights.

Time: median of `--repeat` runs after a first one (which warms kernels and RoPE caches). Peak memory, of that first run:
- CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus the memory allocated before
  the forward (weights and inputs), i.e. the activations and workspace of one forward.
- CPU: the process's resident-set high-water mark (`VmHWM` in /proc/self/status, reset before each run by writing
  5 to /proc/self/clear_refs), minus the resident set before the forward. Where that reset is not available
  (non-Linux) it falls back to the growth of `resource.getrusage().ru_maxrss`, which only sees new highs.
  tracemalloc is not used: it does not see torch's tensor allocations.
"""
import argparse, os, resource, statistics, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from infcam.models import WanConfig, InfCamDiT
from memory import status_kb, reset_cpu_peak, maxrss_kb   # bench/memory.py

CPU_SIZES = [(3, 16, 24), (5, 30, 52), (11, 30, 52)]
CUDA_SIZES = [(5, 30, 52), (11, 40, 68), (21, 60, 104)]   # ..., 41x320x544, 81x480x832






def build(name, device, dtype):
    with torch.device('meta'): m = InfCamDiT(WanConfig.preset(name))
    m = m.to_empty(device=device)
    m.gradient_checkpointing = True
    g = torch.Generator(device='cpu').manual_seed(0)
    with torch.no_grad():
        for p in m.parameters(): p.copy_((torch.randn(p.shape, generator=g) * 0.02).to(p.dtype))
    return m.to(dtype)


def inputs(cfg, size, device, dtype):
    F_, h, w = size
    x = lambda: torch.randn(1, cfg.in_dim, F_, h, w, device=device, dtype=dtype)
    K = torch.tensor([[0.9 * 8 * w, 0.9 * 8 * w, 4. * w, 4. * h]], device=device)
    ext = torch.eye(3, 4, device=device).flatten().expand(1, F_ // cfg.patch_size[0], 12).clone()
    ext[..., 3] = torch.linspace(0, 0.5, ext.shape[1], device=device)
    return (x(), x(), torch.tensor([500.], device=device), torch.randn(1, cfg.text_len, cfg.text_dim, device=device, dtype=dtype),
            K, K, ext)


def run(model, args, train):
    if train:
        model.train(); model(*args).float().square().mean().backward(); model.zero_grad(set_to_none=True)
    else:
        with torch.no_grad(): model(*args)


def measure(name, device, dtype, size, repeat, train):
    model = build(name, device, dtype).train(train)
    args = inputs(model.config, size, device, dtype)
    # peak memory of the first run (on CPU later runs reuse memory the allocator already holds, which RSS cannot see)
    if device.type == 'cuda':
        torch.cuda.synchronize(); base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
        run(model, args, train); torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        rss0 = status_kb('VmRSS')
        if rss0 is not None and reset_cpu_peak():
            run(model, args, train); peak = (status_kb('VmHWM') - rss0) / 1024
        else:
            m0 = maxrss_kb(); run(model, args, train); peak = (maxrss_kb() - m0) / 1024
    times = []
    for _ in range(repeat):
        if device.type == 'cuda': torch.cuda.synchronize()
        t0 = time.perf_counter(); run(model, args, train)
        if device.type == 'cuda': torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    nparam = sum(p.numel() for p in model.parameters())
    del model, args
    if device.type == 'cuda': torch.cuda.empty_cache()
    return statistics.median(times) * 1000, peak, nparam


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', choices=['cpu', 'cuda', 'all'], default='all', help="'all': CPU, and CUDA when present")
    ap.add_argument('--configs', default='tiny,mini', help='comma-separated presets')
    ap.add_argument('--real', action='store_true', help="also the real 'wan2.1-t2v-1.3b' (CUDA only)")
    ap.add_argument('--dtype', choices=['float32', 'bfloat16'], default=None, help='default: float32 on CPU, bfloat16 on CUDA')
    ap.add_argument('--repeat', type=int, default=2, help='timed runs after the first (median reported)')
    ap.add_argument('--train', action='store_true', help='forward + backward with gradient checkpointing')
    a = ap.parse_args(argv)
    devices = [d for d in ('cpu', 'cuda') if a.device in (d, 'all')]
    if 'cuda' in devices and not torch.cuda.is_available():
        if a.device == 'cuda': sys.exit('CUDA is not available')
        devices.remove('cuda')
    mode = 'fwd+bwd' if a.train else 'fwd'
    print(f"InfCamDiT {mode}, batch 1 (target + source), attention {os.environ.get('INFCAM_ATTENTION', 'sdpa')}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"{'device':6} {'config':16} {'params':>8} {'dtype':9} {'latent F,h,w':>13} {'tokens':>7} {'ms':>9} {'peak MiB':>9}")
    for dev in devices:
        device = torch.device(dev)
        dtype = getattr(torch, a.dtype) if a.dtype else (torch.float32 if dev == 'cpu' else torch.bfloat16)
        names = [n for n in a.configs.split(',') if n] + (['wan2.1-t2v-1.3b'] if a.real and dev == 'cuda' else [])
        for name in names:
            for size in (CPU_SIZES if dev == 'cpu' else CUDA_SIZES):
                F_, h, w = size
                tokens = 2 * F_ * (h // 2) * (w // 2)
                ms, peak, n = measure(name, device, dtype, size, a.repeat, a.train)
                print(f"{dev:6} {name:16} {n / 1e6:7.1f}M {str(dtype)[6:]:9} {f'{F_},{h},{w}':>13} {tokens:7d} {ms:9.1f} {peak:9.1f}",
                      flush=True)


if __name__ == '__main__':
    main()
