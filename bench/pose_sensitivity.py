"""How far the mini benchmark's camera columns move when its clips change by amounts no one can see.

`python bench/pose_sensitivity.py [--data BENCH/data/test] [--out figures/ablation_pose_sensitivity.csv]` renders the
mini benchmark's held-out scenes (or reads a benchmark's `data/test`), and scores `ground_truth`, `copy_source` and
`homography_warp` on the held-out pairs as `infcam bench` does, three times: on the clips as read, on the same clips
encoded once more as H.264 (what another encoder build or thread count gives), and with every pixel moved by at most
one grey level (-1, 0 or +1 / 255, a fixed seed). It writes one row per clip and version and prints the means and
medians. It also encodes one clip with 1, 2, 4 and 16 encoder threads and prints how far the decoded pixels differ:
the encoder does not give the same bytes twice. About 5 min on 2 CPU cores (2.5 with `--data`)."""
import argparse, hashlib, tempfile, time
from fractions import Fraction
from pathlib import Path
import numpy as np, pandas as pd, torch
from infcam.benchmark import BenchConfig, REFERENCE, eval_pairs, score, copy_source, homography_warp
from infcam.video import read_video, write_video, to_uint8

def encode(frames, path, threads):
    "`frames` as H.264 (crf 18, as `write_video`) with `threads` encoder threads, decoded back."
    import av
    arr = to_uint8(frames)
    with av.open(str(path), mode='w', format='mp4') as c:
        s = c.add_stream('libx264', rate=Fraction(16))
        s.width, s.height, s.pix_fmt, s.options = arr.shape[2], arr.shape[1], 'yuv420p', {'crf': '18'}
        s.codec_context.thread_count = threads
        for a in arr:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format='rgb24')): c.mux(p)
        for p in s.encode(): c.mux(p)
    return read_video(path)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', help="a benchmark's data/test folder (default: render the mini budget's test scenes)")
    ap.add_argument('--out', default='pose_sensitivity.csv')
    a = ap.parse_args()
    cfg, t0, tmp = BenchConfig.budget('mini'), time.perf_counter(), Path(tempfile.mkdtemp())
    test = Path(a.data) if a.data else tmp / 'test'
    if not a.data:
        from infcam.synthetic import make_dataset
        make_dataset(test, cfg.test_scenes, seed=cfg.test_seed, focal_mms=(cfg.focal_mm, cfg.test_focal_mm),
                     num_frames=cfg.num_frames, height=cfg.height, width=cfg.width, random_cameras=cfg.random_cameras,
                     progress=False)
    pairs = [p for p in eval_pairs(test, cfg) if p.split in ('shared', 'different')]
    g, rows = torch.Generator().manual_seed(0), []
    for p in pairs:
        src, gt = (read_video(path, cfg.num_frames, cfg.height, cfg.width) for path in (p.source, p.target))
        for name, fn in ((REFERENCE, None), ('copy_source', copy_source), ('homography_warp', homography_warp)):
            pred = gt if fn is None else fn(p, src)
            f = tmp / 'again.mp4'; f.unlink(missing_ok=True)
            versions = (('as read', pred), ('encoded again', read_video(write_video(f, pred))),
                        ('±1 grey level', (pred + torch.randint(-1, 2, pred.shape, generator=g) / 255.).clamp(0, 1)))
            for version, x in versions:
                s = score(x, gt, p, cfg.num_frames)
                rows.append(dict(method=name, split=p.split, scene=p.scene, pair=p.pair, version=version, **s))
    df = pd.DataFrame(rows)
    df.to_csv(a.out, index=False)
    print(df.groupby(['method', 'split', 'version'], sort=False).agg(
        RotErr=('RotErr', 'mean'), RotErr_median=('RotErr', 'median'), RotErr_max=('RotErr', 'max'),
        TransErr=('TransErr', 'mean'), registered=('registered', 'mean')).round(3).to_string())
    clip = read_video(pairs[0].target)
    print('\none clip encoded with n threads: sha256 of the decoded pixels, '
          'largest difference from the input (grey levels)')
    for n in (1, 2, 4, 16):
        y = encode(clip, tmp / f't{n}.mp4', n)
        print(n, hashlib.sha256(to_uint8(y).tobytes()).hexdigest()[:12], round(float((y - clip).abs().max()) * 255))
    print(f"\n{time.perf_counter() - t0:.0f} s; rows in {a.out}")

if __name__ == '__main__': main()
