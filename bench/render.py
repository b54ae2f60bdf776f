"""Renderer and warp speed on this machine: `python bench/render.py`.
Prints the fastest of a few runs per size (the CPU may be shared) for rendering the demo scene, the environment map,
and warping frames with the infinite homography."""
import time, argparse, torch
from infcam.render import demo_scene, render_view, fov_intrinsics
from infcam.cameras import intrinsics_matrix, ypr_to_rotation
from infcam.homography import infinite_homography, warp_image

def best(f, n):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return min(ts)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--repeat', type=int, default=5); a = ap.parse_args()
    t0 = time.perf_counter(); scene = demo_scene(0); t_scene = time.perf_counter() - t0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; demo_scene(0): {t_scene:.2f} s\n")
    print(f"| {'size':>9} | {'render 1 view':>13} | {'render 8 views':>14} | {'warp 8 frames':>13} |")
    print(f"|{'-'*11}|{'-'*15}|{'-'*16}|{'-'*15}|")
    for H, W in [(64, 112), (240, 416), (480, 832)]:
        K = fov_intrinsics(H, W, 70.)
        c2w = torch.eye(4).repeat(8, 1, 1)
        c2w[:, :3, :3] = ypr_to_rotation(torch.linspace(-10, 10, 8))
        one = best(lambda: render_view(scene, K, c2w[:1], H, W), a.repeat)
        eight = best(lambda: render_view(scene, K, c2w, H, W), max(1, a.repeat // 2))
        Km = intrinsics_matrix(K).expand(8, 3, 3)
        Hm = infinite_homography(Km, Km, c2w[:, :3, :3])
        imgs = torch.rand(8, 3, H, W)
        warp = best(lambda: warp_image(imgs, Hm), a.repeat)
        size = f'{H}x{W}'
        print(f"| {size:>9} | {one*1e3:10.1f} ms | {eight*1e3:11.1f} ms | {warp*1e3:10.1f} ms |")
