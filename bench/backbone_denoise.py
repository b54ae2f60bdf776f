#!/usr/bin/env python
"""How much detail can the mini benchmark's frozen backbone give back? `python bench/backbone_denoise.py [DATA_DIR]`.

The committed backbone (`infcam/backbones/mini.safetensors`, found by the mini budget's settings) predicts `x0` from
training clips noised to each level; the table gives its PSNR against the clean clip, beside the PSNR of the noisy input
itself (rescaled by 1/(1 - sigma)) and of the clip's mean colour. Where the backbone's estimate stays below the noisy
input at low noise, its width caps the detail it can carry. Renders and caches the benchmark's training data into
DATA_DIR first if it is not there (minutes)."""
import argparse, torch
from safetensors.torch import load_file
from infcam.benchmark import BenchConfig, make_data, find_backbone
from infcam.models import InfCamConfig
from infcam.pipeline import RandomTextEncoder
from infcam.pretrain import latent_files
from infcam.weights import load_dit


def psnr(a, b): return float(-10 * torch.log10((((a - b) / 2) ** 2).mean()))     # latents in [-1, 1]


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('data', nargs='?', default='runs/bench-mini/data'); ap.add_argument('--clips', type=int, default=16)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = BenchConfig.budget('mini')
    data = make_data(a.data, cfg, progress=True)
    bb = find_backbone(cfg)
    if bb is None: raise SystemExit("no pretrained mini backbone found (infcam/backbones/ or the cache): run `infcam bench mini` first")
    model = load_dit(bb, dtype=torch.float32, heads_hint=InfCamConfig.preset(cfg.preset, **cfg.model).num_heads).eval()
    files = latent_files(data['train'], cfg.num_frames, cfg.codec)
    files = files[::max(1, len(files) // a.clips)][:a.clips]
    clips = torch.stack([load_file(str(f))['latents'].float() for f in files])
    ctx = RandomTextEncoder(model.config.text_dim, text_len=model.config.text_len).encode([cfg.caption] * len(clips))
    mean = clips.mean((2, 3, 4), keepdim=True).expand_as(clips)
    print(f"{bb.name}, {len(clips)} training clips {tuple(clips.shape[1:])}, PSNR (dB) against the clean clip\n")
    print('| noise | backbone x0 estimate | noisy input / (1 - noise) | mean colour |\n|---|---|---|---|')
    for s in (0.05, 0.1, 0.3, 0.5, 0.9):
        xt = (1 - s) * clips + s * torch.randn(clips.shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad(): x0 = model(xt, torch.full((len(clips),), s * 1000.), ctx)
        print(f"| {s} | {psnr(x0.clamp(-1, 1), clips):.2f} | {psnr((xt / (1 - s)).clamp(-1, 1), clips):.2f} | {psnr(mean, clips):.2f} |")
