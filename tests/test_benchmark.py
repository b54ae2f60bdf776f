import pandas as pd
import json
import subprocess
import sys
from pathlib import Path

import pytest

from infcam.benchmark import BASELINES, VARIANTS, BenchConfig
from infcam.cli import main

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "nbs" / "ablations.ipynb"
SMOKE = BenchConfig.budget("smoke")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The ablation notebook run by papermill on the smoke budget: every stage (data, the committed backbone, 2 trainings
    of the camera modules on it, 6 methods scored). The other variants differ only in their training command, which
    51_benchmark checks with the trainer's own parser (and test_training the trainer's ablation flags)."""
    import papermill as pm
    from infcam.benchmark import find_backbone
    from infcam.checkpoints import BACKBONE_DIR
    # the committed backbone must serve the smoke budget (else the fixture would pretrain one for many minutes)
    assert find_backbone(BenchConfig.budget("smoke"), [BACKBONE_DIR]) is not None, "no backbone shipped in infcam/backbones"
    d = tmp_path_factory.mktemp("abl")
    pm.execute_notebook(str(NB), str(d / "out.ipynb"), parameters=dict(budget="smoke", out=str(d / "bench"),
                        figures=str(d / "fig")), progress_bar=False, kernel_name="python3", cwd=str(ROOT))
    return d


def test_notebook_writes_table_and_figures(smoke):
    fig = smoke / "fig"
    for f in ("ablation.csv", "ablation.md", "ablation.png", "ablation_samples.png"):
        assert (fig / f).stat().st_size > 100, f
    table = pd.read_csv(fig / "ablation.csv")                 # what a researcher reads back
    assert set(table["method"]) == {"ground_truth", *BASELINES, *SMOKE.variants} and set(SMOKE.variants) < set(VARIANTS)
    assert set(table["split"]) == {"shared", "different", "train", "swapped"}
    by = table.set_index(["method", "split"]).to_dict("index")
    # the trained model uses its source: given another scene's source clip, its PSNR drops. (Its 10-step samples do
    # not beat copy_source at this budget -- see the README; its one-step mean does, asserted in the test below.)
    assert float(by[("full", "shared")]["PSNR"]) > float(by[("full", "swapped")]["PSNR"]) + 0.3
    # the pose estimator recovers the rendered target's own path closely
    assert float(by[("ground_truth", "shared")]["RotErr"]) < 1.5
    # rotation explained by the homography beats copying the source, with either lens
    for sp in ("shared", "different"):
        assert float(by[("homography_warp", sp)]["PSNR"]) > float(by[("copy_source", sp)]["PSNR"])
        # the model's own cue, the first source frame warped to every target frame, moves the camera along the
        # requested path (rotation only, so the estimator recovers it almost exactly) and looks more like the target
        assert float(by[("first_frame_warp", sp)]["RotErr"]) < 0.5 and float(by[("first_frame_warp", sp)]["registered"]) >= 0.8
        assert float(by[("first_frame_warp", sp)]["SSIM"]) > float(by[("copy_source", sp)]["SSIM"])
    # each variant trained in its own run folder with the flags of its ablation
    for v in SMOKE.variants:
        log = (smoke / "bench" / "runs" / f"{v}-s0" / "train.log").read_text().splitlines()[0]
        assert all(a in log for a in VARIANTS[v]["args"]), (v, log)
    cfg = json.loads((smoke / "bench" / "runs" / "no_warp-s0" / "config.json").read_text())
    assert cfg["model"]["warp_module"] is False
    nb = json.loads((smoke / "out.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))
    assert "the warping module: full − no_warp on held-out PSNR (different" in text
    assert "full scores" in text and "dB on training pairs" in text         # the learning findings
    sample = smoke / "bench" / "eval" / "full-s0.sample.safetensors"   # kept by the evaluation, not generated again
    assert sample.is_file()


def test_cli_resumes_and_refuses_other_settings(smoke, capsys):
    out = smoke / "bench"
    before = {p: p.stat().st_mtime_ns for p in (out / "eval").glob("*.csv")}
    assert main(["bench", "smoke", "--out", str(out), "--quiet"]) == 0          # everything is reused
    assert "| full | different |" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "eval").glob("*.csv")} == before
    timing = json.loads((out / "timing.json").read_text())
    assert timing["train full-s0"] > 1 and "eval full-s0" in timing        # the first call's work keeps its timing
    assert main(["bench", "smoke", "--out", str(out), "--steps", "7", "--quiet"]) == 2
    assert "other settings (steps)" in capsys.readouterr().err


def test_rescoring_a_cached_benchmark_gives_its_table(smoke, tmp_path, capsys):
    """Rows scored by other code or libraries (another scorer tag) are scored again, and today's scorer gives back the
    committed table exactly: a table is always what today's code says of the cached runs."""
    import shutil
    from infcam.benchmark import read_rows, write_table, scorer_tag
    out = tmp_path / "bench"
    shutil.copytree(smoke / "bench", out)
    table, rows = (out / "table.csv").read_bytes(), read_rows(out / "rows.csv")
    assert set(rows["scorer"]) == {scorer_tag()}
    stale = ["ground_truth", *BASELINES]                      # what needs no trained run: scored again in seconds
    for m in stale:
        f = out / "eval" / f"{m}-s0.csv"
        r = read_rows(f)
        r["scorer"], r["RotErr"] = "0123456789ab", r["RotErr"] + 7.0     # an older scorer, and other numbers
        write_table(r, f)
    kept = {p: p.stat().st_mtime_ns for p in (out / "eval").glob("*.csv") if p.stem[:-3] not in stale}
    assert main(["bench", "smoke", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert (out / "table.csv").read_bytes() == table
    again = read_rows(out / "rows.csv")
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), rows.drop(columns="seconds"))
    assert {p: p.stat().st_mtime_ns for p in kept} == kept    # rows of today's scorer were read, not made again


def test_cli_scores_again_with_other_generation_steps(smoke, tmp_path, capsys):
    import shutil
    out = tmp_path / "bench"
    shutil.copytree(smoke / "bench", out)
    ckpts = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    before = pd.read_csv(out / "eval" / "full-s0.csv")
    args = ["bench", "smoke", "--out", str(out), "--quiet", "--gen-steps", "1", "--variants", "full", "--baselines"]
    assert main(args) == 2                                        # a finished benchmark is not re-scored unasked
    assert "other settings (gen_steps); overwrite to score its trained runs again" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert "| full | shared |" in capsys.readouterr().out
    assert json.loads((out / "bench.json").read_text())["gen_steps"] == 1
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()} == ckpts   # nothing retrained
    after = pd.read_csv(out / "eval" / "full-s0.csv")
    assert len(after) == len(before) and not (after["PSNR"] - before["PSNR"]).abs().lt(1e-6).all()
    assert not (out / "eval" / "no_warp-s0.csv").exists()         # the old scores went with the old setting
    # learning, checked on the model's mean: after the smoke budget's 100 steps on the committed backbone, full's
    # one-step estimate beats copying the source on training pairs and through the other lens (measured: +0.8 and
    # +1.0 dB; the untrained modules score 1.1 and 0.5 dB below copy_source). Its 10-step samples do not yet.
    copy = pd.read_csv(smoke / "bench" / "eval" / "copy_source-s0.csv").groupby("split")["PSNR"].mean()
    mean = after.groupby("split")["PSNR"].mean()
    for split in ("train", "different"):
        assert mean[split] > copy[split] + 0.3, (split, mean[split], copy[split])


def test_gen_steps_bench_script(smoke, tmp_path):
    "bench/gen_steps.py on a finished benchmark: the one-step and two-step scores beside the baselines, and the plot."
    import shutil
    out = tmp_path / "bench"
    shutil.copytree(smoke / "bench", out)
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gen_steps.py"), str(out), "--steps", "1", "2"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [l for l in r.stdout.splitlines() if l.startswith("| full-s0 |")]
    assert [l.split("|")[2].strip() for l in lines] == ["1", "2"]
    assert "| homography_warp | — |" in r.stdout and "| first_frame_warp | — |" in r.stdout
    assert (out / "gen_steps.png").stat().st_size > 1000
    one = pd.read_csv(out / "gen_steps" / "full-s0-g1.csv")            # the same numbers the CLI's rescoring gives
    assert len(one) == len(pd.read_csv(out / "eval" / "copy_source-s0.csv")[lambda d: d["split"].isin(["train", "shared", "different"])])
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gen_steps.py"), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "not an infcam bench folder" in r.stderr
