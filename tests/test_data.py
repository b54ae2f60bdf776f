import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from infcam.cameras import focal_mm_to_px, latent_frame_indices, load_camera_extrinsics
from infcam.core import InfcamError
from infcam.cache import CachedPairDataset, latents_path, load_context, load_latents, prepare, text_path, text_tag
from infcam.data import ClipFolder, MultiCamDataset, PairDataset, item_rng, sample_pair, clip_intrinsics
from infcam.synthetic import add_refocused_copy, load_scene, make_dataset, write_metadata
from infcam.vae import PixelCodec
from infcam.video import read_video, write_video

F, H, W = 9, 32, 48


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    "One synthetic scene (9 frames, 32x48) in f24_aperture5 and its 50 mm AugMCV copy."
    root = tmp_path_factory.mktemp("mcv")
    make_dataset(root, 1, num_frames=F, height=H, width=W, progress=False, num_objects=2, num_moving=0)
    add_refocused_copy(root, "f24_aperture5", "scene1", 50, load_scene(root / "f24_aperture5" / "scene1")["spec"])
    return root


@pytest.fixture
def work(base, tmp_path):
    "A private copy of the base dataset that a test may break."
    d = tmp_path / "mcv"
    shutil.copytree(base, d)
    return d


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, base):
    from transformers import UMT5EncoderModel
    from infcam.text import TextEncoder, build_tiny_tokenizer, umt5_config
    caps = [c for e in MultiCamDataset(base).scenes for c in e.captions.values()]
    tok = build_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "umt5", caps * 4 + ["a cat on a sofa"])
    torch.manual_seed(0)
    cfg = umt5_config(vocab=len(tok), dim=32, dim_attn=32, dim_ffn=48, num_heads=2, num_layers=1)
    return TextEncoder(UMT5EncoderModel(cfg).eval(), tok, text_len=24)


def test_refocused_copy_joins_its_scene(base):
    "The naming rules themselves are checked in nbs/08_layout.ipynb; here, the index applies them to real folders."
    ds = MultiCamDataset(base)
    assert ds.ids == ["f24_aperture5/scene1"]
    g = ds.groups["f24_aperture5/scene1"]
    assert [(e.focal_mm, e.aug, e.name) for e in g] == [(24, False, "scene1"), (50, True, "scene1_f50")]


def test_index_and_captions(base):
    ds = MultiCamDataset(base)
    assert len(ds.clips()) == 20 and ds.problems == []
    with open(base / "metadata.csv") as f:
        rows = {r["file_name"]: r["text"] for r in csv.DictReader(f)}
    e = ds.groups["f24_aperture5/scene1"][0]
    assert ds.caption(e, "cam04") == rows["f24_aperture5/scene1/videos/cam04.mp4"] != ""
    a = ds.groups["f24_aperture5/scene1"][1]
    assert ds.caption(a, "cam04") == ds.caption(e, "cam04")          # an augmented copy falls back to the original


def test_clip_folder(base, tmp_path, encoder):
    for c in ("cam01", "cam02"):
        shutil.copy(base / "f24_aperture5" / "scene1" / "videos" / f"{c}.mp4", tmp_path / f"{c}.mp4")
    (tmp_path / "metadata.csv").write_text('file_name,text\ncam01.mp4,"first, clip"\ncam02.mp4,second\nnope.mp4,gone\n')
    cf = ClipFolder(tmp_path, num_frames=5)
    assert len(cf) == 2 and [t for _, t in cf.clips] == ["first, clip", "second"]
    assert len(cf.problems) == 1 and "nope.mp4" in cf.problems[0][1]
    it = cf[0]
    assert it["video"].shape == (3, 5, H, W) and -1 <= it["video"].min() and it["video"].max() <= 1
    with pytest.raises(InfcamError, match="nope.mp4"):
        ClipFolder(tmp_path, on_error="raise")
    rep = prepare(tmp_path, PixelCodec(), encoder, num_frames=5, height=16, width=32, progress=False)
    assert (rep.clips, rep.encoded, rep.captions, rep.texts_encoded, len(rep.failed)) == (2, 2, 2, 2, 1)
    z, K = load_latents(tmp_path / "latents" / "cam01.16x32x5.pixel.safetensors")
    assert z.shape == (192, 2, 2, 4)
    torch.testing.assert_close(K, clip_intrinsics(24, (H, W), 16, 32))
    assert abs(K[0] - focal_mm_to_px(24, H, W) * 16 / 24) < 1e-4            # 32x48 cropped to 24x48, scaled to 16x32
    ctx = load_context(text_path(tmp_path, "first, clip", text_tag(encoder)))
    n = int(encoder.tokenize(["first, clip"])[1].sum())
    assert n < 24 and ctx.shape == (24, 32) and ctx[n:].abs().max() == 0 and ctx[n - 1].abs().max() > 0   # zeros after the prompt
    torch.testing.assert_close(ctx, encoder.encode("first, clip")[0], atol=1e-6, rtol=0)
    (tmp_path / "metadata.csv").write_text("path,caption\n")
    with pytest.raises(InfcamError, match="file_name,text"):
        ClipFolder(tmp_path)


def test_pairs_cameras_and_aug(base):
    ds = MultiCamDataset(base)
    rng = item_rng(0, 0)
    pairs = [sample_pair(ds, rng) for _ in range(400)]
    assert all(p["target"][1] != p["source"][1] for p in pairs)
    frac = np.mean([p["aug"] is not None for p in pairs])
    assert 0.42 < frac < 0.58, frac
    for p in pairs:
        focals = (p["target"][0].focal_mm, p["source"][0].focal_mm)
        assert focals == {None: (24, 24), "target": (50, 24), "source": (24, 50)}[p["aug"]]
    assert all(p["aug"] is None for p in (sample_pair(ds, rng, 0, aug_prob=0.) for _ in range(50)))


def test_pair_items_extrinsics_intrinsics(base):
    pds = PairDataset(base, num_frames=F, seed=1)
    cams = {False: load_camera_extrinsics(base / "f24_aperture5" / "scene1" / "cameras" / "camera_extrinsics.json"),
            True: load_camera_extrinsics(base / "f24_aperture5_aug" / "scene1_f50" / "cameras" / "camera_extrinsics.json")}
    seen = set()
    for epoch in range(6):
        pds.set_epoch(epoch)
        it = pds[0]
        m = it["meta"]
        assert m["target_camera"] != m["source_camera"]
        assert it["target"].shape == it["source"].shape == (3, F, H, W) and it["extrinsics"].shape == (3, 12)
        src = cams["_aug" in Path(m["source"]).parts[-4]][m["source_camera"]].double()
        tgt = cams["_aug" in Path(m["target"]).parts[-4]][m["target_camera"]].double()
        ref = (torch.linalg.inv(src[0]) @ tgt[latent_frame_indices(F)])[:, :3].reshape(-1, 12)
        torch.testing.assert_close(it["extrinsics"].double(), ref, atol=1e-5, rtol=0)
        for side in ("src", "tgt"):
            f = m[("source" if side == "src" else "target") + "_focal_mm"]
            torch.testing.assert_close(it[f"K_{side}"], torch.tensor([focal_mm_to_px(f, H, W)] * 2 + [W / 2, H / 2]))
        # the target video is that camera's video
        v = read_video(m["target"], F).permute(1, 0, 2, 3) * 2 - 1
        torch.testing.assert_close(it["target"], v)
        seen.add(m["aug"])
    assert len(seen) >= 2                                        # epochs change the draw
    batch = torch.utils.data.default_collate([it, it])           # a DataLoader can batch items
    assert batch["target"].shape == (2, 3, F, H, W) and batch["meta"]["target_camera"] == [m["target_camera"]] * 2
    # frames resized to a training size: intrinsics follow
    it = PairDataset(base, num_frames=5, height=64, width=96, seed=1)[0]
    assert it["target"].shape == (3, 5, 64, 96) and it["extrinsics"].shape == (2, 12)
    torch.testing.assert_close(it["K_tgt"][0], torch.tensor(focal_mm_to_px(it["meta"]["target_focal_mm"], 64, 96)))


def test_determinism(base):
    a, b = PairDataset(base, num_frames=F, seed=5), PairDataset(base, num_frames=F, seed=5)
    x, y = a[0], b[0]
    assert x["meta"] == y["meta"] and torch.equal(x["target"], y["target"]) and torch.equal(x["extrinsics"], y["extrinsics"])
    metas = {json.dumps(PairDataset(base, num_frames=F, seed=s)[0]["meta"], sort_keys=True) for s in range(8)}
    assert len(metas) > 1
    with pytest.raises(IndexError):
        a[1]


def test_prepare_and_cached_equals_on_the_fly(work, encoder):
    codec = PixelCodec()
    rep = prepare(work, codec, encoder, num_frames=F, progress=False)
    assert (rep.clips, rep.encoded, rep.cached, rep.failed) == (20, 20, 0, [])
    assert rep.captions == 1 and rep.texts_encoded == 1
    p = latents_path(work / "f24_aperture5" / "scene1" / "videos" / "cam03.mp4", H, W, F, "pixel")
    assert p == work / "f24_aperture5" / "scene1" / "latents" / "cam03.32x48x9.pixel.safetensors" and p.is_file()
    assert "20 clips (20 encoded" in rep.summary and (work / "prepare_report.json").is_file()
    rep2 = prepare(work, codec, encoder, num_frames=F, progress=False)
    assert (rep2.encoded, rep2.cached, rep2.texts_encoded, rep2.texts_cached) == (0, 20, 0, 1)
    pds = PairDataset(work, num_frames=F, seed=3)
    cds = CachedPairDataset(work, codec, encoder, num_frames=F, seed=3)
    for i in range(4):
        pds.set_epoch(i); cds.set_epoch(i)
        a, b = pds[0], cds[0]
        assert a["meta"] == b["meta"] and a["caption"] == b["caption"]
        torch.testing.assert_close(b["target"], codec.encode(a["target"][None])[0], atol=0, rtol=0)
        torch.testing.assert_close(b["source"], codec.encode(a["source"][None])[0], atol=0, rtol=0)
        for k in ("K_src", "K_tgt", "extrinsics"):
            assert torch.equal(a[k], b[k]), k
        ctx = encoder.encode(a["caption"])[0]
        assert b["context"].shape == (24, 32)
        torch.testing.assert_close(b["context"], ctx, atol=1e-6, rtol=0)
    # text files hold only the prompt's tokens
    tp = text_path(work, a["caption"], text_tag(encoder))
    from safetensors import safe_open
    with safe_open(str(tp), "pt") as f:
        n = f.get_tensor("context").shape[0]
    assert n == int(encoder.tokenize([a["caption"]])[1].sum())


def test_prepare_resume(work):
    codec = PixelCodec()
    calls = []
    real = codec.encode

    def dying(x):
        if len(calls) == 10: raise KeyboardInterrupt  # killed mid-run
        calls.append(1)
        return real(x)

    codec.encode = dying
    with pytest.raises(KeyboardInterrupt):
        prepare(work, codec, num_frames=F, progress=False)
    done = sorted(work.glob("**/latents/*.safetensors"))
    assert len(done) == 10
    leftover = done[0].parent / ".cam09.32x48x9.pixel.abcd1234.tmp.safetensors"   # what a hard kill leaves
    leftover.write_bytes(b"half a file")
    stamp = {p: p.stat().st_mtime_ns for p in done}
    codec.encode = real
    rep = prepare(work, codec, num_frames=F, progress=False)
    assert (rep.encoded, rep.cached, rep.removed_temp, rep.failed) == (10, 10, 1, [])
    assert not leftover.exists() and len(list(work.glob("**/latents/*.safetensors"))) == 20
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())   # finished files were not rewritten
    # a damaged cache file is re-encoded, not trusted
    done[1].write_bytes(b"garbage")
    rep = prepare(work, codec, num_frames=F, progress=False)
    assert (rep.encoded, rep.cached) == (1, 19)
    z, K = load_latents(done[1])
    assert z.shape == (192, 3, 4, 6) and K.shape == (4,)


def test_bad_data(work):
    sc = work / "f24_aperture5" / "scene1"
    shutil.copytree(sc, work / "f24_aperture5" / "scene2")
    write_metadata(work)
    (sc / "videos" / "cam02.mp4").write_bytes(b"not a video")                                   # corrupt
    write_video(sc / "videos" / "cam03.mp4", torch.rand(5, 3, H, W), overwrite=True)             # too short
    (work / "f24_aperture5" / "scene2" / "cameras" / "camera_extrinsics.json").unlink()          # no cameras
    with open(work / "metadata.csv", "a") as f:
        f.write("f24_aperture5/scene9/videos/cam01.mp4,nothing\n")                               # names nothing
    rep = prepare(work, PixelCodec(), num_frames=F, progress=False)
    failed = dict(rep.failed)
    assert rep.encoded == 8 + 10 and len(rep.failed) == 4, rep.failed
    assert "camera file missing" in failed[str(work / "f24_aperture5" / "scene2" / "cameras" / "camera_extrinsics.json")]
    assert "scene9" in failed[str(work / "metadata.csv")]
    assert "cannot read video" in failed[str(sc / "videos" / "cam02.mp4")]
    assert "too short" in failed[str(sc / "videos" / "cam03.mp4")]
    assert "2 skipped; 2 unusable rows or scenes" in rep.summary          # clip counts add up; layout problems apart
    assert rep.encoded + rep.cached + len(rep.failed) - rep.problems == rep.clips
    saved = json.loads((work / "prepare_report.json").read_text())
    assert len(saved["failed"]) == 4
    with pytest.raises(InfcamError, match="camera_extrinsics.json"):
        prepare(work, PixelCodec(), num_frames=F, progress=False, on_error="raise")
    # on the fly: bad pairs are skipped and reported, or raise
    pds = PairDataset(work, num_frames=F, seed=0, aug_prob=0.)
    with pytest.warns(UserWarning, match="skipping a bad pair"):
        items = [pds[0] for _ in range(1)] + [(pds.set_epoch(e), pds[0])[1] for e in range(1, 12)]
    assert all(it["meta"]["target_camera"] not in ("cam02", "cam03") and it["meta"]["source_camera"] not in ("cam02", "cam03")
               for it in items)
    assert any("cam0" in why for _, why in pds.problems)
    strict = PairDataset(work, num_frames=F, seed=0, aug_prob=0., on_error="skip")
    strict.problems.on_error = "raise"
    with pytest.raises(InfcamError):
        for e in range(12):
            strict.set_epoch(e); strict[0]
    with pytest.raises(InfcamError, match="camera file missing"):
        PairDataset(work, num_frames=F, on_error="raise")
    # the cached dataset uses only the clips that were cached
    cds = CachedPairDataset(work, "pixel", text=False, num_frames=F)
    assert all(len(e.cameras) == 8 for e in cds.index.scenes if not e.aug)
    with pytest.raises(InfcamError, match="on_error"):
        prepare(work, PixelCodec(), num_frames=F, on_error="ignore")


def test_retimed_copies_and_short_scenes(work):
    sc = work / "f24_aperture5" / "scene1"
    shutil.copytree(sc, work / "f24_aperture5_aug" / "scene1_rev")          # a re-timed copy: a scene of its own
    ds = MultiCamDataset(work)
    assert ds.ids == ["f24_aperture5/scene1", "f24_aperture5/scene1_rev"]
    rev = ds.groups["f24_aperture5/scene1_rev"]
    assert len(rev) == 1 and rev[0].aug and rev[0].focal_mm == 24 and rev[0].num_frames == F
    rng = item_rng(0, 1)
    for _ in range(50):
        p = sample_pair(ds, rng, "f24_aperture5/scene1_rev")
        assert p["target"][0] is p["source"][0] is rev[0] and p["target"][1] != p["source"][1]
    # scenes shorter than the clip length are reported and left out
    pds = PairDataset(work, num_frames=F + 4)
    assert len(pds) == 0 and len(pds.problems) == 3 and all("need 13" in why for _, why in pds.problems)


def test_reads_infcam_augment_output(base, tmp_path):
    import infcam.augment as aug
    src = tmp_path / "mcv"
    shutil.copytree(base / "f24_aperture5", src / "f24_aperture5")
    shutil.copy(base / "metadata.csv", src / "metadata.csv")
    aug.augment(src, src, focal_targets=[35], trajectory=None, workers=0, progress=False)
    ds = MultiCamDataset(src)
    assert ds.problems == []
    g = ds.groups["f24_aperture5/scene1"]
    assert [(e.setting, e.name, e.focal_mm) for e in g] == [("f24_aperture5", "scene1", 24), ("f24_aperture5_aug", "scene1_f35", 35)]
    assert ds.caption(g[1], "cam01") == ds.caption(g[0], "cam01") != ""
    it = PairDataset(src, num_frames=F, seed=0, aug_prob=1.0)[0]
    assert {it["meta"]["target_focal_mm"], it["meta"]["source_focal_mm"]} == {24, 35}
