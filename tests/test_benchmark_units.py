"""The benchmark's pieces that need no trained run: its settings, scoring, the fixed pairs, and the full budget's path
at a tiny size (test_benchmark.py holds the tests of its trained smoke run)."""
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from infcam.benchmark import BenchConfig, EvalPair, markdown_table, run_benchmark, score, summarize, eval_pairs
from infcam.core import InfcamError

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "nbs" / "ablations.ipynb"


def test_bad_parameters_are_errors(tmp_path):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError, match="unknown parameter stpes"):
        pm.execute_notebook(str(NB), str(tmp_path / "bad.ipynb"), parameters=dict(budget="smoke", stpes=3),
                            progress_bar=False, kernel_name="python3", cwd=str(ROOT))
    with pytest.raises(InfcamError, match="unknown budget"):
        BenchConfig.budget("huge")
    with pytest.raises(InfcamError, match="unknown baseline"):
        BenchConfig(baselines=["oracle"])


def test_score_and_summary_by_hand():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(9, 3, 32, 48, generator=g)
    noisy = (gt + 0.1).clamp(0, 1)
    K, still = torch.tensor([40., 40., 24., 16.]), torch.eye(4).expand(9, 4, 4)
    pair = EvalPair("shared", "scene1", 0, "cam01", "cam02", Path("a.mp4"), Path("b.mp4"), "", K, K, still, still, still)
    s = score(noisy, gt, pair, 9)
    mse = ((noisy - gt)[[0, 4, 8]] ** 2).mean()
    assert abs(s["PSNR"] - float(10 * torch.log10(1 / mse))) < 1e-3
    assert 0 < s["SSIM"] < 1
    rows = [dict(method="m", seed=0, split="shared", **s), dict(method="m", seed=0, split="shared", **{**s, "PSNR": s["PSNR"] + 2})]
    t = summarize(rows)
    assert len(t) == 1 and abs(t.loc[0, "PSNR"] - (s["PSNR"] + 1)) < 1e-9 and abs(t.loc[0, "PSNR_se"] - 1) < 1e-9
    assert "| m | shared |" in markdown_table(t)


def test_pairs_are_fixed_and_share_cameras_across_splits(tmp_path):
    from infcam.synthetic import make_dataset
    cfg = BenchConfig.budget("smoke", pairs_per_scene=2, test_scenes=1)
    make_dataset(tmp_path / "test", 1, seed=cfg.test_seed, focal_mms=(cfg.focal_mm, cfg.test_focal_mm),
                 num_frames=cfg.num_frames, height=cfg.height, width=cfg.width, progress=False)
    pairs = eval_pairs(tmp_path / "test", cfg)
    assert [p.split for p in pairs] == ["shared", "different"] * 2
    again = eval_pairs(tmp_path / "test", cfg)
    assert [(p.source_camera, p.target_camera) for p in pairs] == [(p.source_camera, p.target_camera) for p in again]
    for a, b in (pairs[:2], pairs[2:]):
        assert (a.source_camera, a.target_camera) == (b.source_camera, b.target_camera)
        assert a.source_camera != a.target_camera
        assert torch.allclose(a.c2w, b.c2w, atol=1e-4)             # same cameras, another lens
        assert torch.allclose(b.K_tgt[:2], a.K_tgt[:2] * cfg.test_focal_mm / cfg.focal_mm)
        assert torch.allclose(a.ref[0], torch.eye(4), atol=1e-5)
    with pytest.raises(InfcamError, match="missing"):
        eval_pairs(tmp_path / "test", BenchConfig.budget("smoke", test_scenes=2))
    two = BenchConfig.budget("smoke", pairs_per_scene=2, test_scenes=2)
    make_dataset(tmp_path / "test2", 2, seed=two.test_seed, focal_mms=(two.focal_mm, two.test_focal_mm),
                 num_frames=two.num_frames, height=two.height, width=two.width, progress=False)
    pairs = eval_pairs(tmp_path / "test2", two)
    swapped = [p for p in pairs if p.split == "swapped"]
    shared = [p for p in pairs if p.split == "shared"]
    assert len(swapped) == two.train_pairs and all(p.scene in p.target.parts and p.scene not in p.source.parts
                                                   for p in swapped)       # the source comes from the other scene
    assert [(p.scene, p.pair, p.target) for p in swapped] == [(p.scene, p.pair, p.target) for p in shared[:2]]


def test_bench_runs_on_wan_vae_latents(tmp_path, monkeypatch):
    """The full budget's path at a tiny size: a random Wan VAE (diffusers folder) makes the latents, a tiny Wan DiT is
    the frozen base, the camera modules train on the VAE latents and generate through its decoder."""
    from infcam.testing import make_tiny_release
    from safetensors import safe_open
    monkeypatch.setenv("INFCAM_CACHE", str(tmp_path / "cache"))
    rel = make_tiny_release(tmp_path / "w", layout="diffusers", infcam=False) / "Wan2.1-T2V-1.3B-Diffusers"
    kw = dict(preset="tiny", model={}, codec="wanvae", train_scenes=1, test_scenes=2, pairs_per_scene=1, train_pairs=1,
              random_cameras=0, steps=2, warmup=0, gen_steps=2, variants=["full"], baselines=["copy_source"], seeds=[0],
              num_frames=9, height=32, width=48)                 # smaller than the smoke budget: the VAE is the cost here
    with pytest.raises(InfcamError, match="codec 'wanvae' needs the Wan VAE"):
        BenchConfig.budget("smoke", base=str(rel / "transformer"), **kw)
    cfg = BenchConfig.budget("smoke", base=str(rel / "transformer"), vae=str(rel / "vae"), **kw)
    res = run_benchmark(tmp_path / "bench", cfg, progress=False)
    assert "| full | shared |" in res["table"]
    lat = sorted((tmp_path / "bench" / "data" / "train").rglob("latents/*.wanvae.safetensors"))
    assert lat, "no Wan VAE latents cached"
    with safe_open(str(lat[0]), "pt") as f:
        z = f.get_tensor("latents")
    assert z.shape[0] == 16 and z.shape[-2:] == (cfg.height // 8, cfg.width // 8)
    run = json.loads((tmp_path / "bench" / "runs" / "full-s0" / "config.json").read_text())
    assert run["data"]["codec"] == "wanvae"
    rows = pd.read_csv(tmp_path / "bench" / "eval" / "full-s0.csv")
    assert rows["PSNR"].notna().all() and len(rows) == len(pd.read_csv(tmp_path / "bench" / "eval" / "copy_source-s0.csv"))
    # a model that cannot take the VAE's latents is refused before anything is rendered
    with pytest.raises(InfcamError, match="gives 16-channel latents; the model takes 192"):
        BenchConfig.budget("smoke", vae=str(rel / "vae"), codec="wanvae")
