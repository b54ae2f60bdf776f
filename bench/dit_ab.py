#!/usr/bin/env python
"""The InfCam DiT forward against an earlier version of itself: same weights, same inputs, in one process.

    python bench/dit_ab.py --rev 28bfd6c          # the InfCam DiT as it was at that commit vs the working tree

The files `infcam/models/wan.py` and `infcam/models/infcam.py` of `--rev` are loaded beside the current ones (the
old InfCam block on the old Wan code; it works for 28bfd6c, the model issue 15 measured against the published code
(unchanged from fc960da to then), and for 7c878cd (the revisions run so far); the rest of the package, e.g.
`infcam.homography`, is the current one), both models get the same random weights (zero_conv and cam_encoder made non-zero so every path works), and
their forwards alternate, timed in single-thread CPU time (`time.thread_time`, steady on a shared machine); the best of
`--repeat` is reported per configuration, with the ratio new / old and the largest output difference.
"""
import argparse, importlib.util, subprocess, sys, tempfile, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ((384, 2, 5, 24, 40), (384, 2, 9, 30, 52))    # dim, layers, latent frames, token rows, token columns


def load_rev(rev, name, replace=()):
    "Module `infcam/models/{name}.py` as it was at `rev`, loaded as a sibling module (for its relative imports)."
    src = subprocess.run(['git', '-C', str(ROOT), 'show', f'{rev}:infcam/models/{name}.py'], capture_output=True, text=True, check=True).stdout
    for a, b in replace: src = src.replace(a, b)
    path = ROOT / 'infcam' / 'models' / f'rev_{name}_{abs(hash(rev)) % 10**8}.py'
    path.write_text(src)
    try:
        spec = importlib.util.spec_from_file_location(f'infcam.models.{path.stem}', path)
        mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
    finally: path.unlink()
    return mod


def old_module(rev):
    "The InfCam module of `rev`, running on the Wan module of `rev`."
    wan = load_rev(rev, 'wan')
    return load_rev(rev, 'infcam', [('from .wan import', f'from .{wan.__name__.rsplit(".", 1)[1]} import')])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rev', required=True); ap.add_argument('--repeat', type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from infcam.models import WanConfig, InfCamDiT
    oldmod = old_module(a.rev)
    print(f"InfCamDiT forward, working tree vs {a.rev}; single-thread CPU seconds, best of {a.repeat}\n")
    print('| dim | layers | latents f x h x w (tokens) | new s | old s | new / old | max abs diff |\n|---|---|---|---|---|---|---|')
    for dim, layers, f, h, w in CONFIGS:
        cfg = WanConfig.preset('tiny', dim=dim, ffn_dim=4 * dim, num_heads=4, num_layers=layers)
        torch.manual_seed(0)
        new = InfCamDiT(cfg).eval()
        with torch.no_grad():
            for blk in new.blocks: blk.zero_conv.weight.normal_(0, 0.02); blk.cam_encoder.weight.normal_(0, 0.02)
        old = oldmod.InfCamDiT(oldmod.WanConfig.from_dict(cfg.to_dict())).eval(); old.load_state_dict(new.state_dict())
        g = torch.Generator().manual_seed(1)
        ph, pw = cfg.patch_size[1:]
        x = torch.randn(1, cfg.in_dim, f, h * ph, w * pw, generator=g)
        H, W = h * ph * 8, w * pw * 8
        K = torch.tensor([[W * .8, W * .8, W / 2, H / 2]])
        E = torch.eye(3, 4).reshape(1, 1, 12).repeat(1, f, 1); E[..., 3] = 0.1
        args = (x, torch.randn(x.shape, generator=g), torch.tensor([500.]), torch.randn(1, cfg.text_len, cfg.text_dim, generator=g),
                K, K * 1.2, E)
        tn, to = [], []
        with torch.no_grad():
            diff = float((new(*args) - old(*args)).abs().max())
            for _ in range(a.repeat):
                t0 = time.thread_time(); new(*args); tn.append(time.thread_time() - t0)
                t0 = time.thread_time(); old(*args); to.append(time.thread_time() - t0)
        print(f"| {dim} | {layers} | {f}x{h}x{w} ({f * h * w}) | {min(tn):.3f} | {min(to):.3f} | {min(tn) / min(to):.3f} | {diff:.1e} |", flush=True)


if __name__ == '__main__': main()
