"""What the camera metrics can resolve: the pose estimator on rendered clips whose paths are known exactly.

`python bench/pose_floor.py [--height 128 --width 224 --frames 33 --scenes 1]` renders the demo scene
along each of the ten presets, estimates the poses of frames 0, 4, 8, ... with
`infcam.metrics.estimate_poses` as `infcam evaluate` does, and prints RotErr / TransErr / registered fraction against
the true path per preset (mean over scenes): the floor below which a method's camera errors mean nothing."""
import argparse, time
import torch
from infcam.cameras import PRESET_NAMES, preset
from infcam.intrinsics import default_intrinsics
from infcam.metrics import estimate_poses, camera_metrics
from infcam.render import demo_scene, render_view

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--height', type=int, default=128); ap.add_argument('--width', type=int, default=224)
    ap.add_argument('--frames', type=int, default=33); ap.add_argument('--scenes', type=int, default=1)
    a = ap.parse_args()
    K = default_intrinsics(a.height, a.width)
    idx = list(range(0, a.frames, 4))
    t0 = time.perf_counter()
    print(f"pose estimator floor: demo scenes 0..{a.scenes - 1}, {a.height}x{a.width}, frames {idx[0]}, {idx[1]}, ... {idx[-1]}, "
          f"24 mm lens\n")
    print('| preset | RotErr (deg) | TransErr | registered |\n|---|---|---|---|')
    for i, name in PRESET_NAMES.items():
        c2w = preset(i, a.frames, full=True)[idx]
        res = []
        for s in range(a.scenes):
            scene = demo_scene(s)
            frames = torch.cat([render_view(scene, K, c2w[j:j + 1], a.height, a.width, ss=2)[0] for j in range(len(idx))])
            try:
                est, reg, _ = estimate_poses(frames, K)
                res.append(camera_metrics(est, c2w, reg))
            except Exception as e:                                  # a clip the estimator cannot pose counts as unregistered
                res.append(dict(RotErr=float('nan'), TransErr=float('nan'), registered=0.))
        m = {k: torch.tensor([r[k] for r in res]).nanmean().item() for k in ('RotErr', 'TransErr', 'registered')}
        print(f"| {i} {name} | {m['RotErr']:.2f} | {m['TransErr']:.3f} | {m['registered']:.2f} |", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s")

if __name__ == '__main__': main()
