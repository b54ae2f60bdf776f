#!/usr/bin/env python
"""Peak memory of ONE full-width InfCam block forward (dim 1536, ffn 8960, 12 heads) in bf16 on the CPU, before vs after.

    python bench/block_memory.py                  # before = the block of 7c878cd, after = the working tree (ffn_chunk off / on)
    python bench/block_memory.py --repeat 5 --frames 2 --rows 8 --cols 12

Unit: one stream's tokens x 1536 x 2 bytes (one video's tokens in bf16; 100 MB at 81x480x832). A middle block of
the DiT takes 2 streams (target and source, `x` is 2 units) and returns 2; the warped stream is the third. Weights,
inputs and the output of a warm-up forward exist before the measured forward, so the peak is what the forward adds on
top of them: activations and temporaries, the output included.

Each variant runs in a fresh process (alternating variants, `--repeat` times) with `MALLOC_MMAP_THRESHOLD_=65536`, so
every tensor larger than 64 KiB is its own mapping, given back when freed: the resident set then follows the live
tensors. The peak is the resident-set high-water mark (`VmHWM`, reset through /proc/self/clear_refs) minus the
resident set just before the forward. tracemalloc does not see torch's allocations, and the profiler's memory events
are incomplete on the CPU, hence this.

The text is 16 tokens (its keys and values are negligible at full size, where a stream has 32760 tokens), and the
warp grid is an input (the working tree builds it once per forward outside the blocks; 7c878cd built it in each).
"""
import argparse, json, os, statistics, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / 'bench'))
DIM, FFN, HEADS = 1536, 8960, 12
VARIANTS = ('before', 'after', 'after, ffn_chunk')


def child(variant, rev, f, h, w, chunk):
    import torch
    from memory import status_kb, reset_cpu_peak      # bench/memory.py
    torch.set_num_threads(1); torch.manual_seed(0)
    if variant == 'before':
        from dit_ab import old_module
        mod = old_module(rev)
    else:
        import infcam.models.infcam as mod
    from infcam.homography import latent_warp_grid
    from infcam.models.wan import rope_table          # the same tables at both versions
    with torch.device('meta'): blk = mod.InfCamBlock(DIM, FFN, HEADS)
    blk = blk.to_empty(device='cpu').to(torch.bfloat16).eval()
    with torch.no_grad():
        for p in blk.parameters(): p.normal_(0, 0.02)
    B, L, bf = 1, f * h * w, torch.bfloat16
    x = torch.randn(2 * B, L, DIM).to(bf)
    ctx, t_mod = torch.randn(2 * B, 16, DIM).to(bf), torch.randn(B, 6, DIM).repeat(2, 1, 1) * 0.1
    Kn = mod.normalize_intrinsics(torch.tensor([[0.9 * 8 * w, 0.9 * 8 * w, 4. * w, 4. * h]]))
    ext = torch.eye(3, 4).flatten().repeat(B, f, 1); ext[..., 3] = torch.linspace(0, 0.5, f)
    code = mod.camera_code_inputs(Kn, Kn, ext)
    hd = DIM // HEADS
    rope3, rope = rope_table(3, h, w, hd), rope_table(f, h, w, hd)
    if variant == 'before': args = (x, ctx, t_mod, (f, h, w), (Kn, Kn, ext, code), rope3, rope, 'released')
    else:
        args = (x, ctx, t_mod, (f, h, w), (latent_warp_grid(Kn, Kn, ext, h, w), code), rope3, rope)
        blk.ffn_chunk = chunk if variant == 'after, ffn_chunk' else None
    with torch.no_grad():
        out = blk(*args)                                  # warm-up (one-time buffers, caches)
        rss0 = status_kb('VmRSS')
        if not reset_cpu_peak(): raise SystemExit('cannot reset the peak resident set (/proc/self/clear_refs)')
        out2 = blk(*args)
        peak = status_kb('VmHWM') - rss0
    assert torch.equal(out, out2)
    print(json.dumps(dict(peak_kb=peak, unit_kb=L * DIM * 2 / 1024)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rev', default='7c878cd'); ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--frames', type=int, default=2); ap.add_argument('--rows', type=int, default=8); ap.add_argument('--cols', type=int, default=12)
    ap.add_argument('--ffn-chunk', type=int, default=64, help='tokens per feed-forward chunk of the third variant')
    ap.add_argument('--child', choices=VARIANTS)
    a = ap.parse_args()
    if a.child: return child(a.child, a.rev, a.frames, a.rows, a.cols, a.ffn_chunk)
    env = {**os.environ, 'MALLOC_MMAP_THRESHOLD_': '65536', 'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', '')}
    units = {v: [] for v in VARIANTS}
    for _ in range(a.repeat):
        for v in VARIANTS:
            cmd = [sys.executable, __file__, '--child', v, '--rev', a.rev, '--frames', str(a.frames), '--rows', str(a.rows),
                   '--cols', str(a.cols), '--ffn-chunk', str(a.ffn_chunk)]
            r = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            units[v].append(r['peak_kb'] / r['unit_kb'])
    L = a.frames * a.rows * a.cols
    print(f"Peak of one full-width InfCam block forward (dim {DIM}, ffn {FFN}, {HEADS} heads, bf16, CPU, no grad), "
          f"latent tokens {a.frames}x{a.rows}x{a.cols} = {L} per stream; unit = {L} x {DIM} x 2 bytes = {L * DIM * 2 / 2**20:.2f} MiB; "
          f"{a.repeat} fresh processes per variant; before = {a.rev}\n")
    print('| variant | peak units (median) | min | max |\n|---|---|---|---|')
    for v in VARIANTS:
        name = f"{v} {a.ffn_chunk}" if v.endswith('ffn_chunk') else v
        print(f"| {name} | {statistics.median(units[v]):.1f} | {min(units[v]):.1f} | {max(units[v]):.1f} |")


if __name__ == '__main__': main()
