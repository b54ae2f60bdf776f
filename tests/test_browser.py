"""The notebooks' interactive parts in a real browser: one JupyterLab server on a free localhost port and one headless
Chromium (Selenium) for the whole module; each test runs its notebook from JupyterLab's own "run all" command.

The tests compare what the page shows with what the library computes, not only that something changed:
- the homography panel (`nbs/03_homography.ipynb`): after the yaw is typed into the slider as a user would, the
  warped picture read from the page equals `warp_image` of the page's own source picture by the homography of the
  sliders' values (every covered pixel within 1 grey level of 255, the PNG's rounding; every uncovered one exactly the
  checkerboard), its PSNR line equals `covered_psnr` of the page's pictures (within 0.1 dB) and names the covered
  fraction; turned out of the source's view, the panel says there is no overlap and shows no number.
- the path designer (`nbs/04_trajectories.ipynb`): a keyframe is edited in the page's table, the frame slider moved,
  the path saved with the page's button; the saved file, loaded back, holds the table's rows and gives its poses
  (1e-5), the preview picture on the page is exactly `preview_frames` for that file (within 1 grey level), the coverage
  shown is that frame's mask fraction, and the `infcam preview` command the page shows for the saved file writes the
  same frame (within the H.264 codec's error: 4 grey levels on average, the label box excluded).

CI installs Debian's `chromium` and `chromium-driver` (`.ci/run`); without them the tests fail under CI and are
skipped elsewhere, naming what to install. Screenshots are left in the module's temporary folder."""
import base64, io, os, re, shlex, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CHROME_FLAGS = ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic',
                '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
                '--window-size=1400,1000')
NOTEBOOKS = ('03_homography.ipynb', '04_trajectories.ipynb')

def _browser() -> tuple[str, str]:
    chrome = shutil.which('chromium') or shutil.which('chromium-browser')
    driver = shutil.which('chromedriver')
    if chrome and driver: return chrome, driver
    msg = "headless Chromium is needed: apt-get install chromium chromium-driver (as .ci/run does)"
    if os.environ.get('CI'): pytest.fail(msg)
    pytest.skip(msg)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def tmp(tmp_path_factory): return tmp_path_factory.mktemp('browser')

@pytest.fixture(scope='module')
def lab(tmp):
    "A JupyterLab server over copies of the notebooks (the repository's files are never written), its URL."
    _browser()
    work = tmp / 'work'
    (work / 'nbs').mkdir(parents=True)
    for nb in NOTEBOOKS: shutil.copy(ROOT / 'nbs' / nb, work / 'nbs')
    shutil.copy(ROOT / 'settings.ini', work)                       # the notebooks' last cell runs nbdev_export
    (work / 'tests').symlink_to(ROOT / 'tests')                     # the golden files 03 reads
    (work / 'data').symlink_to(ROOT / 'data')                       # the clip and trajectories 04 reads
    settings = tmp / 'lab-settings' / '@jupyterlab' / 'apputils-extension'
    settings.mkdir(parents=True)
    (settings / 'notification.jupyterlab-settings').write_text('{"fetchNews": "false", "checkForUpdates": false}')
    port = _free_port()
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(tmp / 'cfg'), 'JUPYTER_RUNTIME_DIR': str(tmp / 'rt'),
           'JUPYTERLAB_SETTINGS_DIR': str(tmp / 'lab-settings'), 'JUPYTERLAB_WORKSPACES_DIR': str(tmp / 'ws'),
           'MPLBACKEND': 'module://matplotlib_inline.backend_inline'}
    env.pop('INFCAM_FIGURES', None)
    log = open(tmp / 'jupyterlab.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', '--ip=127.0.0.1', f'--port={port}',
                             '--ServerApp.token=', '--ServerApp.password=', f'--ServerApp.root_dir={work}',
                             '--LabApp.expose_app_in_browser=True', '--allow-root'],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    try:
        deadline = time.time() + 120
        while True:
            try: urllib.request.urlopen(url + '/api', timeout=2); break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"JupyterLab did not start: {(tmp / 'jupyterlab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try: proc.wait(30)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()

@pytest.fixture(scope='module')
def browser(tmp):
    chrome, driver = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in (*CHROME_FLAGS, f'--user-data-dir={tmp / "chrome"}'): opts.add_argument(a)
    d = webdriver.Chrome(service=Service(driver), options=opts)
    d.set_script_timeout(600)
    try: yield d
    finally: d.quit()

def _wait(d, js:str, timeout:float, what:str, *args):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if r := d.execute_script(js, *args): return r
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

NB = "window.jupyterapp.shell.currentWidget"
IDLE = f"return {NB}.sessionContext.session.kernel.status === 'idle'"

def _settle(d, timeout:float=120):
    "Wait until the kernel has been idle for a second (every message a widget sent has been handled)."
    deadline, idle_since = time.time() + timeout, None
    while time.time() < deadline:
        if not d.execute_script(IDLE): idle_since = None
        elif idle_since is None: idle_since = time.time()
        elif time.time() - idle_since > 1: return
        time.sleep(0.2)
    raise AssertionError(f"the kernel stayed busy for {timeout:.0f} s")

def _run_notebook(d, lab:str, name:str, ready:str):
    """Open `name` in JupyterLab and run all its cells; fail with the first traceback shown. Then wait for the element
    `ready` (a CSS selector): the kernel is idle before the browser has drawn the widgets it sent, more so on a busy
    machine."""
    d.get(f'{lab}/lab/tree/nbs/{name}')
    _wait(d, f"const w = window.jupyterapp && {NB}; const k = w && w.sessionContext && w.sessionContext.session && "
             f"w.sessionContext.session.kernel; return w && w.title.label === '{name}' && k && k.status === 'idle'",
          120, f"the kernel of {name}")
    ok = d.execute_async_script("const done = arguments[arguments.length - 1]; window.jupyterapp.commands"
                                ".execute('notebook:run-all-cells').then(r => done(r), e => done('' + e))")
    errors = d.execute_script("return Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
                              ".map(e => e.textContent).filter(t => t.includes('Traceback'))")
    assert ok is True and not errors, f"{name} failed in JupyterLab: {ok!r} {errors[:1]}"
    counts = d.execute_script(f"return {NB}.content.widgets.filter(c => c.model.type === 'code')"
                              ".map(c => c.model.executionCount)")
    assert counts and all(c is not None for c in counts), f"cells not run: {counts}"
    _settle(d)
    _wait(d, "return document.querySelector(arguments[0])", 120, f"{ready} to be drawn", ready)

def _png(data:bytes) -> torch.Tensor:
    "A PNG as a float image (3, H, W) in [0, 1] (values k/255)."
    from PIL import Image
    arr = np.asarray(Image.open(io.BytesIO(data)).convert('RGB')).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255

def _image_bytes(d, css:str) -> bytes:
    "The bytes of the picture an <img> shows (a data: or blob: URL), fetched inside the page."
    r = d.execute_async_script(
        "const done = arguments[arguments.length - 1]; const img = document.querySelector(arguments[0]);"
        "if (!img) { done('missing'); return; }"
        "fetch(img.src).then(r => r.arrayBuffer()).then(b => { const u = new Uint8Array(b); let s = '';"
        " for (let i = 0; i < u.length; i += 8192) s += String.fromCharCode.apply(null, u.subarray(i, i + 8192));"
        " done('ok ' + btoa(s)); }).catch(e => done('error ' + e))", css)
    assert r.startswith('ok '), f"could not read the picture {css}: {r}"
    return base64.b64decode(r[3:])

def _type(el, text:str):
    "Replace the text of an input (or an editable readout) as a user does: select all, type, Enter."
    from selenium.webdriver.common.keys import Keys
    el.click(); el.send_keys(Keys.CONTROL, 'a'); el.send_keys(text); el.send_keys(Keys.ENTER)

# ---------------------------------------------------------------- the homography panel (nbs/03)

PANEL_OUT = '.widget-interact .widget-output'
REPORT = re.compile(r'PSNR of the warp against the target: ([\d.]+) dB over ([<>\d.]+%) of the frame')

def _panel(d) -> tuple[str, str]:
    return d.execute_script(f"const o = document.querySelector('{PANEL_OUT}'); const i = o && o.querySelector('img');"
                            "return o ? [o.textContent, i ? i.src : ''] : null")

def _slider(d, name:str):
    from selenium.webdriver.common.by import By
    s = [s for s in d.find_elements(By.CSS_SELECTOR, '.widget-interact .widget-slider')
         if s.find_element(By.CSS_SELECTOR, '.widget-label').text.strip() == name]
    assert len(s) == 1, f"no {name} slider in the panel"
    return s[0]

def _set_slider(d, name:str, value:float):
    "Type a value into a panel slider's readout; wait until the panel has redrawn."
    from selenium.webdriver.common.by import By
    before = _panel(d)[1]
    readout = _slider(d, name).find_element(By.CSS_SELECTOR, '.widget-readout')
    _type(readout, f'{value:g}')
    _wait(d, f"const o = document.querySelector('{PANEL_OUT} img'); return o && o.src !== arguments[0]", 120,
          f"the panel to redraw after {name} = {value:g}", before)
    _settle(d)

def _check_panel(d) -> tuple[float|None, float]:
    "Compare the panel's pictures and its line with the library's warp of the page's own source picture."
    from selenium.webdriver.common.by import By
    from infcam.homography import (ROW_GAP, infinite_homography, warp_image, mask_uncovered, covered_psnr, percent,
                                   intrinsics_matrix)
    from infcam.cameras import focal_mm_to_px, pixel_intrinsics
    from infcam.render import rotation_matrix
    text, src = _panel(d)
    assert src.startswith('data:image/png;base64,'), f"the panel shows no picture: {text}"
    row = _png(base64.b64decode(src.split(',', 1)[1]))
    H, W4 = row.shape[-2:]
    W = (W4 - 3 * ROW_GAP) // 4
    source, target, shown = (row[:, :, k * (W + ROW_GAP):k * (W + ROW_GAP) + W] for k in range(3))
    v = {n: float(_slider(d, n).find_element(By.CSS_SELECTOR, '.widget-readout').text)
         for n in ('yaw', 'pitch', 'roll', 'f_src_mm', 'f_tgt_mm')}
    lens = lambda f: intrinsics_matrix(pixel_intrinsics(focal_mm_to_px(f, H, W), H, W))
    Hm = infinite_homography(lens(v['f_src_mm']), lens(v['f_tgt_mm']), rotation_matrix(v['yaw'], v['pitch'], v['roll']))
    warped, mask = warp_image(source[None], Hm, return_mask=True)
    expect = (mask_uncovered(warped, mask)[0] * 255).round()
    diff = (shown * 255 - expect).abs()
    m = mask[0].expand_as(diff) > 0
    if m.any(): assert diff[m].max() <= 1, f"the warp shown differs from warp_image by {diff[m].max():.0f} grey levels"
    assert torch.equal(shown[~m] * 255, expect[~m]), "uncovered pixels are not masked with the checkerboard"
    p, frac = covered_psnr(warped.clamp(0, 1), target[None], mask)
    assert 'nan' not in text.lower()
    if p is None:
        assert 'no overlap' in text and 'dB' not in text, text
        return None, 0.
    got = REPORT.search(text)
    assert got, f"no PSNR line in the panel: {text}"
    assert abs(float(got[1]) - p) <= 0.1, f"the panel says {got[1]} dB, its pictures give {p:.2f} dB"
    assert got[2] == percent(frac), f"the panel says {got[2]} of the frame, the mask covers {percent(frac)}"
    return p, frac

def test_homography_panel_shows_the_warp(lab, browser, tmp):
    d = browser
    _run_notebook(d, lab, '03_homography.ipynb', f'{PANEL_OUT} img')
    d.execute_script("arguments[0].scrollIntoView({block: 'start'})", _slider(d, 'yaw'))
    p0, f0 = _check_panel(d)                                        # as the notebook left it: yaw 15, pitch 5
    assert p0 is not None and 0.5 < f0 < 1
    _set_slider(d, 'yaw', 25)
    d.save_screenshot(str(tmp / 'panel_yaw25.png'))
    p1, f1 = _check_panel(d)
    assert f1 < f0 and p1 != p0
    _set_slider(d, 'yaw', 60)                                       # a sliver of the 18 mm view is left, at a corner
    p2, f2 = _check_panel(d)
    assert p2 is not None and 0 < f2 < 0.01
    _set_slider(d, 'pitch', 0)                                      # and none with the camera level
    d.save_screenshot(str(tmp / 'panel_no_overlap.png'))
    assert _check_panel(d) == (None, 0.)

# ---------------------------------------------------------------- the path designer (nbs/04)

def _table(d) -> list[dict]:
    "The keyframe table as the page shows it."
    from infcam.trajectories import DESIGN_COLUMNS
    rows = d.execute_script(
        "const cols = arguments[0]; const out = [];"
        "for (let i = 0; document.querySelector(`.infcam-designer .infcam-kf-${i}-t input`); i++)"
        " out.push(cols.map(c => document.querySelector(`.infcam-designer .infcam-kf-${i}-${c} input`).value));"
        "return out", list(DESIGN_COLUMNS))
    return [dict(zip(DESIGN_COLUMNS, map(float, r))) for r in rows]

def _designer_css(name:str) -> str: return f'.infcam-designer .infcam-{name}'

def test_designer_edit_scrub_save(lab, browser, tmp):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from infcam.trajectories import Trajectory, trajectory_rows, rows_trajectory, load_trajectory
    from infcam.preview import preview_frames, source_intrinsics
    from infcam.video import read_video
    d = browser
    _run_notebook(d, lab, '04_trajectories.ipynb', '.infcam-designer .infcam-preview')
    css = _designer_css
    designer = d.find_element(By.CSS_SELECTOR, '.infcam-designer')
    d.execute_script("arguments[0].scrollIntoView({block: 'start'})", designer)
    rows = _table(d)
    assert len(rows) >= 2, f"the designer shows no keyframe table: {rows}"
    # edit a keyframe: the last one turns 18 deg right and 4 deg up, as a user types it
    last = len(rows) - 1
    before = _image_bytes(d, css('preview'))
    for col, val in (('yaw', '18'), ('pitch', '4')):
        _type(d.find_element(By.CSS_SELECTOR, f"{css(f'kf-{last}-{col}')} input"), val)
        _settle(d)
    rows = _table(d)
    assert (rows[last]['yaw'], rows[last]['pitch']) == (18., 4.), f"the edit did not reach the table: {rows[last]}"
    # scrub the frame slider to frame 12 with the keyboard
    slider = d.find_element(By.CSS_SELECTOR, css('time'))
    handle = slider.find_element(By.CSS_SELECTOR, '.noUi-handle')
    handle.click()
    for _ in range(12): handle.send_keys(Keys.ARROW_RIGHT)
    _settle(d)
    frame = int(slider.find_element(By.CSS_SELECTOR, '.widget-readout').text)
    assert frame == 12
    # save with the page's button, to a file named in the page
    out = tmp / 'designed.yaml'
    _type(d.find_element(By.CSS_SELECTOR, f"{css('file')} input"), str(out))
    _settle(d)
    d.find_element(By.CSS_SELECTOR, css('save')).click()
    _wait(d, f"const s = document.querySelector('{css('status')}'); return s && s.textContent.includes('saved')", 60,
          "the designer to save")
    d.save_screenshot(str(tmp / 'designer.png'))
    assert out.exists(), "the save button wrote no file"
    # the file holds the table, and gives the table's poses
    saved = Trajectory.load(out)
    n = saved.frames
    for got, want in zip(trajectory_rows(saved), rows, strict=True):
        for c, v in want.items(): assert abs(got[c] - v) <= 1e-6, f"saved {c} = {got[c]}, the table shows {v}"
    assert torch.allclose(load_trajectory(out, n), rows_trajectory(rows).sample(n), atol=1e-5)
    # the preview shown for frame 12 is preview_frames' frame for the saved file, the coverage its mask's
    clip = read_video(ROOT / 'data' / 'clips' / 'demo_17f.mp4')
    assert n == clip.shape[0]
    K = source_intrinsics(*clip.shape[-2:])
    shown, mask = preview_frames(clip, *load_trajectory(out, n, with_zoom=True), K, progress=False)
    page = _png(_image_bytes(d, css('preview')))
    assert page.shape == shown[frame].shape
    assert (page * 255 - (shown[frame] * 255).round()).abs().max() <= 1, "the preview shown is not preview_frames'"
    assert page.ne(_png(before)).any(), "the preview did not change with the path"
    fraction = float(d.find_element(By.CSS_SELECTOR, f"{css('coverage')} .infcam-fraction").text)
    assert abs(fraction - float(mask[frame].mean())) < 1e-4
    # and the `infcam preview` command the page shows writes the same frame (H.264 and its label box aside)
    cmd = shlex.split(d.find_element(By.CSS_SELECTOR, f"{css('status')} .infcam-command").text)
    assert cmd[:2] == ['infcam', 'preview'] and cmd[cmd.index('--trajectory') + 1] == str(out), cmd
    mp4 = tmp / 'preview.mp4'
    cmd[cmd.index('--out') + 1] = str(mp4)
    r = subprocess.run([sys.executable, '-m', 'infcam.cli', *cmd[1:]], cwd=tmp / 'work' / 'nbs', capture_output=True,
                       text=True, env={**os.environ, 'PYTHONPATH': str(ROOT)}, timeout=300)
    assert r.returncode == 0, r.stderr
    import av                                                       # decoded as written (read_video would crop to 16s)
    with av.open(str(mp4)) as c: written = [f.to_ndarray(format='rgb24') for f in c.decode(video=0)]
    right = torch.from_numpy(written[frame][:, -clip.shape[-1]:].copy()).permute(2, 0, 1).float() / 255
    err = (right - page)[:, 16:].abs().mean()                       # below the label box drawn in the top rows
    assert err < 4 / 255, f"infcam preview's frame differs from the page's by {err * 255:.1f} grey levels on average"
