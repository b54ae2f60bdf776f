"""Does the warped latent carry the view the model should produce? `python bench/token_warp.py [DATA_DIR]`.
On the mini benchmark's held-out pairs, the source's first frame is brought to the target camera three ways and scored
against the target's first frame (PSNR, dB): copied unchanged, warped in pixels by the infinite homography, and warped
as PixelCodec tokens (8x8 patches stacked as 192 channels, the latents the mini models see; `--stride 4`: 4x4) by the same homography at
latent resolution, then decoded. A second table scores whole clips: the model's own cue (the source's first frame
warped to every target frame, as InfCam's warped stream is built, in tokens and in pixels) against the
`homography_warp` baseline (each source frame warped by the rotation of its own instant). Where the cue scores below
the baseline, a model that only copied its warped stream could not beat the baseline. Renders the benchmark's data
into DATA_DIR first if it is not there (minutes)."""
import argparse, torch
from infcam.benchmark import BenchConfig, make_data, eval_pairs
from infcam.cameras import intrinsics_matrix, rigid_inverse, homogeneous
from infcam.homography import infinite_homography, warp_image
from infcam.video import read_video

def psnr(a, b): return float(-10 * torch.log10(((a - b) ** 2).mean()))

if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('data', nargs='?', default='runs/bench-mini/data')
    ap.add_argument('--stride', type=int, default=8, help='pixels per token side (8: the mini benchmark; 4: a token grid twice as fine)')
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = BenchConfig.budget('mini')
    data = make_data(a.data, cfg, progress=True)
    from infcam.vae import PixelCodec
    codec, s = PixelCodec(4, a.stride), a.stride               # PixelCodec: s x s pixels per token
    S = torch.diag(torch.tensor([1 / s, 1 / s, 1.]))            # pixel -> latent coordinates (centres at i + 0.5 in both)
    rows, clips = {}, {}
    from infcam.benchmark import homography_warp
    for p in eval_pairs(data['test'], cfg, data['train']):
        if p.split not in ('shared', 'different'): continue
        src = read_video(p.source, cfg.num_frames, cfg.height, cfg.width)
        gt = read_video(p.target, cfg.num_frames, cfg.height, cfg.width)[:1]
        R = (rigid_inverse(homogeneous(p.src_c2w)) @ homogeneous(p.c2w))[:1, :3, :3]
        H = infinite_homography(intrinsics_matrix(p.K_src)[None], intrinsics_matrix(p.K_tgt)[None], R)
        z = codec.encode((src.permute(1, 0, 2, 3) * 2 - 1)[None])[0]             # (C, F_lat, h, w)
        z[:, :1] = warp_image(z[:, :1].permute(1, 0, 2, 3), (S @ H[0] @ torch.linalg.inv(S))[None]).permute(1, 0, 2, 3)
        tok = ((codec.decode(z[None])[0].permute(1, 0, 2, 3)[:1] + 1) / 2).clamp(0, 1)
        r = rows.setdefault(p.split, {'copy': [], 'pixel warp': [], 'token warp': []})
        r['copy'].append(psnr(src[:1], gt)); r['pixel warp'].append(psnr(warp_image(src[:1], H).clamp(0, 1), gt))
        r['token warp'].append(psnr(tok, gt))
        # whole clips, at the latent frames (what the PixelCodec keeps): the first source frame warped to each of them
        full = read_video(p.target, cfg.num_frames, cfg.height, cfg.width)[::4]
        R = (rigid_inverse(homogeneous(p.src_c2w[:1])) @ homogeneous(p.c2w))[::4, :3, :3]
        Hs = infinite_homography(intrinsics_matrix(p.K_src).expand(len(R), 3, 3), intrinsics_matrix(p.K_tgt).expand(len(R), 3, 3), R)
        z0 = codec.encode((src[:1].permute(1, 0, 2, 3) * 2 - 1)[None])[0, :, 0]      # (C, h, w)
        zt = warp_image(z0[None].expand(len(R), -1, -1, -1), S @ Hs @ torch.linalg.inv(S))   # (f, C, h, w)
        tokc = ((codec.decode(zt.permute(1, 0, 2, 3)[None])[0].permute(1, 0, 2, 3)[::4] + 1) / 2).clamp(0, 1)
        c = clips.setdefault(p.split, {'cue, tokens': [], 'cue, pixels': [], 'homography_warp': []})
        c['cue, tokens'].append(psnr(tokc, full))
        c['cue, pixels'].append(psnr(warp_image(src[:1].expand(len(R), -1, -1, -1), Hs).clamp(0, 1), full))
        c['homography_warp'].append(psnr(homography_warp(p, src)[::4], full))
    print("| split | clips | copy | pixel warp | token warp |\n|---|---|---|---|---|")
    for split, r in rows.items():
        print(f"| {split} | {len(r['copy'])} | " + ' | '.join(f"{sum(v) / len(v):.2f}" for v in r.values()) + ' |')
    print("\nwhole clips (latent frames 0, 4, 8, ...):\n\n| split | clips | first frame warped to each, tokens | the same in pixels | "
          "homography_warp |\n|---|---|---|---|---|")
    for split, r in clips.items():
        print(f"| {split} | {len(r['homography_warp'])} | " + ' | '.join(f"{sum(v) / len(v):.2f}" for v in r.values()) + ' |')
