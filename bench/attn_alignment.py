#!/usr/bin/env python
"""Does a trained model's homography-guided attention look where the method needs it to?

    python bench/attn_alignment.py RUN/ckpt/stepN --data PREPARED_ROOT [--frames 17 --codec pixel]

For a few training pairs at three noise levels, it records the attention of every block's `self_attn_pre` (a forward
hook recomputes the queries and keys from the block's own weights) and prints, per block: the attention mass the
target tokens put on the target, source and warped streams; the mass on the warped token at the same position (the
one the homography has aligned with the target), and on its 3x3 neighbourhood; and the attention entropy. Uniform
attention over the 3·h·w tokens puts 1/(3hw) on the same-position token: a model that uses the warp is far above it.
"""
import argparse, math
import torch
from einops import rearrange
from infcam.cache import CachedPairDataset
from infcam.models.wan import apply_rope
from infcam.pipeline import RandomTextEncoder
from infcam.checkpoints import load_trained
from infcam.training import collate


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('ckpt'); ap.add_argument('--data', required=True)
    ap.add_argument('--frames', type=int, default=17); ap.add_argument('--codec', default='pixel')
    ap.add_argument('--pairs', type=int, default=4); ap.add_argument('--caption', default='a synthetic scene')
    a = ap.parse_args()
    model = load_trained(a.ckpt, device='cpu').eval()
    ds = CachedPairDataset(a.data, codec=a.codec, text=False, num_frames=a.frames, seed=0)
    b = collate([ds[i] for i in range(a.pairs)])
    ctx = RandomTextEncoder(model.config.text_dim, text_len=model.config.text_len).encode([a.caption] * a.pairs)
    rec = []
    def hook(mod, args, out):
        x, rope = args[0], args[1]
        heads = lambda t: rearrange(t, 'b l (n d) -> b l n d', n=mod.num_heads)
        q, k = apply_rope(heads(mod.norm_q(mod.q(x))), *rope), apply_rope(heads(mod.norm_k(mod.k(x))), *rope)
        rec.append(torch.softmax(torch.einsum('blnd,bmnd->bnlm', q, k) / math.sqrt(q.shape[-1]), -1))
    for blk in model.blocks: blk.self_attn_pre.register_forward_hook(hook)
    tgt, src = b['target'], b['source']
    _, _, f, h, w = tgt.shape
    h, w = h // model.config.patch_size[1], w // model.config.patch_size[2]
    hw = h * w
    print(f"{a.ckpt}: {a.pairs} pairs, token grid {h}x{w}; uniform attention puts {1 / (3 * hw):.4f} on one token, "
          f"{9 / (3 * hw):.3f} on a 3x3 patch\n")
    print('| sigma | block | target | source | warped | same position | 3x3 | entropy |\n|---|---|---|---|---|---|---|---|')
    ii = torch.arange(hw); qy, qx = ii // w, ii % w
    for sigma in (0.9, 0.5, 0.1):
        rec.clear()
        xt = (1 - sigma) * tgt + sigma * torch.randn(tgt.shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            model(xt, src, torch.full((a.pairs,), sigma * 1000.), ctx, b['K_src'], b['K_tgt'], b['extrinsics'])
        for li, att in enumerate(rec):
            at = att[:, :, :hw]                                        # the target tokens' queries
            mass = [float(at[..., i * hw:(i + 1) * hw].sum(-1).mean()) for i in range(3)]
            aw = at[..., 2 * hw:].reshape(*at.shape[:3], h, w)
            same = float(aw[:, :, ii, qy, qx].mean())
            near = sum(float((aw[:, :, ii, (qy + dy).clamp(0, h - 1), (qx + dx).clamp(0, w - 1)]
                              * (((qy + dy) >= 0) & ((qy + dy) < h) & ((qx + dx) >= 0) & ((qx + dx) < w))).mean())
                       for dy in (-1, 0, 1) for dx in (-1, 0, 1))
            ent = float(-(at * (at + 1e-12).log()).sum(-1).mean())
            print(f"| {sigma} | {li} | {mass[0]:.2f} | {mass[1]:.2f} | {mass[2]:.2f} | {same:.4f} | {near:.3f} | {ent:.2f} |")


if __name__ == '__main__': main()
