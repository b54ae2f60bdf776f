"""What the camera metrics can resolve: both pose estimators on rendered clips whose paths are known exactly.

`python bench/pose_floor.py --sizes 64x112 128x224 480x832 [--presets 1 2 ...] [--frames 33] [--out bench/pose_floor.csv]`
renders demo scene 0 (2x supersampled, 24 mm lens) along each preset at each size, estimates the poses of frames
0, 4, 8, ... with `infcam.metrics.poses_by` ('builtin': `estimate_poses`; 'colmap': `colmap_poses`, one thread) as
`infcam evaluate` does, and appends one CSV row per (size, preset, estimator): RotErr, TransErr and the registered
fraction against the true path (`camera_metrics`: the same alignment as evaluate), and the CPU seconds of the
process for that clip (`time.process_time`, every thread; the two estimators alternate on the same rendered clip).
A clip an estimator cannot pose scores registered 0 and no errors. Rows already in `--out` are kept (a re-run adds
only what is missing). Notebook 50 reads the committed CSV."""
import argparse, csv, os, platform, time
from pathlib import Path
import torch
from infcam.cameras import PRESET_NAMES, preset
from infcam.core import InfcamError
from infcam.intrinsics import default_intrinsics
from infcam.metrics import poses_by, camera_metrics, POSE_ESTIMATORS
from infcam.render import demo_scene, render_view

FIELDS = ('height', 'width', 'frames', 'preset', 'name', 'estimator', 'RotErr', 'TransErr', 'registered', 'cpu_seconds',
          'versions')

def versions() -> str:
    import cv2, numpy, pycolmap
    return f"python {platform.python_version()} torch {torch.__version__} opencv {cv2.__version__} numpy {numpy.__version__} pycolmap {pycolmap.__version__}"

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes', nargs='+', default=['64x112', '128x224', '480x832'])
    ap.add_argument('--presets', nargs='+', type=int, default=list(PRESET_NAMES))
    ap.add_argument('--frames', type=int, default=33)
    ap.add_argument('--out', default=str(Path(__file__).with_name('pose_floor.csv')))
    a = ap.parse_args()
    out = Path(a.out)
    done = set()
    if out.is_file():
        with out.open() as f: done = {(r['height'], r['width'], r['preset'], r['estimator']) for r in csv.DictReader(f)}
    ver = versions()
    idx = list(range(0, a.frames, 4))
    for size in a.sizes:
        H, W = map(int, size.split('x'))
        K = default_intrinsics(H, W)
        for i in a.presets:
            todo = [e for e in POSE_ESTIMATORS if (str(H), str(W), str(i), e) not in done]
            if not todo: continue
            c2w = preset(i, a.frames, full=True)[idx]
            scene = demo_scene(0)
            frames = torch.cat([render_view(scene, K, c2w[j:j + 1], H, W, ss=2)[0] for j in range(len(idx))])
            for e in todo:
                t = time.process_time()
                try:
                    est, reg, _ = poses_by(e, frames, K)
                    m = camera_metrics(est, c2w, reg)
                except (InfcamError, RuntimeError):
                    m = dict(RotErr=float('nan'), TransErr=float('nan'), registered=0.)
                secs = time.process_time() - t
                row = dict(height=H, width=W, frames=len(idx), preset=i, name=PRESET_NAMES[i], estimator=e,
                           RotErr=f"{m['RotErr']:.4f}", TransErr=f"{m['TransErr']:.5f}", registered=f"{m['registered']:.4f}",
                           cpu_seconds=f"{secs:.2f}", versions=ver)
                new = not out.is_file()
                with out.open('a', newline='') as f:
                    w = csv.DictWriter(f, FIELDS)
                    if new: w.writeheader()
                    w.writerow(row)
                print(' '.join(f"{k}={row[k]}" for k in FIELDS[:-1]), flush=True)

if __name__ == '__main__': main()
