"""The homography notebook in a real browser: JupyterLab on a free localhost port, headless Chromium driven by Selenium.

It runs `nbs/03_homography.ipynb` top to bottom from JupyterLab's own "run all" command, moves the `yaw` slider of
the exploration panel with the keyboard as a user would, and checks that the panel's warp picture and its printed PSNR
change. Screenshots of the panel before and after are left in the test's temporary folder.

CI installs Debian's `chromium` and `chromium-driver` (`.ci/run`); without them the test fails under CI and is
skipped elsewhere, naming what to install."""
import os, re, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROME_FLAGS = ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic',
                '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
                '--window-size=1400,1000')

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

@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server over a copy of the notebook (the repository's files are never written), its URL."
    work = tmp_path / 'work'
    (work / 'nbs').mkdir(parents=True)
    shutil.copy(ROOT / 'nbs' / '03_homography.ipynb', work / 'nbs')
    shutil.copy(ROOT / 'settings.ini', work)                       # the notebook's last cell runs nbdev_export
    (work / 'tests').symlink_to(ROOT / 'tests')                     # the golden files it reads
    settings = tmp_path / 'lab-settings' / '@jupyterlab' / 'apputils-extension'
    settings.mkdir(parents=True)
    (settings / 'notification.jupyterlab-settings').write_text('{"fetchNews": "false", "checkForUpdates": false}')
    port = _free_port()
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(tmp_path / 'cfg'), 'JUPYTER_RUNTIME_DIR': str(tmp_path / 'rt'),
           'JUPYTERLAB_SETTINGS_DIR': str(tmp_path / 'lab-settings'), 'JUPYTERLAB_WORKSPACES_DIR': str(tmp_path / 'ws'),
           'MPLBACKEND': 'module://matplotlib_inline.backend_inline'}
    env.pop('INFCAM_FIGURES', None)
    log = open(tmp_path / 'jupyterlab.log', 'w')
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
                    pytest.fail(f"JupyterLab did not start: {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try: proc.wait(30)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()

@pytest.fixture
def browser(tmp_path):
    chrome, driver = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in (*CHROME_FLAGS, f'--user-data-dir={tmp_path / "chrome"}'): opts.add_argument(a)
    d = webdriver.Chrome(service=Service(driver), options=opts)
    try: yield d
    finally: d.quit()

def _wait(d, js:str, timeout:float, what:str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if r := d.execute_script(js): return r
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

NB = "window.jupyterapp.shell.currentWidget"
PANEL = ("const o = document.querySelector('.widget-interact .widget-output'); const i = o && o.querySelector('img');"
         "return o ? [o.textContent, i ? i.src : ''] : null")
PSNR = re.compile(r'masked PSNR of the warp against the target: ([\d.]+) dB')

def test_homography_panel_in_jupyterlab(lab, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    d = browser
    d.get(lab + '/lab/tree/nbs/03_homography.ipynb')
    _wait(d, f"const w = window.jupyterapp && {NB}; const k = w && w.sessionContext && w.sessionContext.session && "
             "w.sessionContext.session.kernel; return k && k.status === 'idle'", 120, "the notebook's kernel")
    d.set_script_timeout(600)
    ok = d.execute_async_script("const done = arguments[arguments.length - 1];"
                                "window.jupyterapp.commands.execute('notebook:run-all-cells').then(r => done(r), e => done('' + e))")
    errors = d.execute_script("return Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
                              ".map(e => e.textContent).filter(t => t.includes('Traceback'))")
    assert ok is True and not errors, f"the notebook failed in JupyterLab: {ok!r} {errors[:1]}"
    counts = d.execute_script(f"return {NB}.content.widgets.filter(c => c.model.type === 'code').map(c => c.model.executionCount)")
    assert counts and all(c is not None for c in counts), f"cells not run: {counts}"

    before = d.execute_script(PANEL)
    assert before and PSNR.search(before[0]) and before[1].startswith('data:image/png'), f"the panel shows no warp: {before}"
    yaw = [s for s in d.find_elements(By.CSS_SELECTOR, '.widget-interact .widget-slider')
           if s.find_element(By.CSS_SELECTOR, '.widget-label').text.strip() == 'yaw']
    assert len(yaw) == 1, "no yaw slider in the panel"
    yaw = yaw[0]
    start = float(yaw.find_element(By.CSS_SELECTOR, '.widget-readout').text)
    d.execute_script("arguments[0].scrollIntoView({block: 'start'})", yaw)
    d.save_screenshot(str(tmp_path / 'panel_before.png'))
    handle = yaw.find_element(By.CSS_SELECTOR, '.noUi-handle')
    handle.click()
    for _ in range(10): handle.send_keys(Keys.ARROW_RIGHT)        # ten steps of one degree, as a user would
    assert float(yaw.find_element(By.CSS_SELECTOR, '.widget-readout').text) == start + 10
    # the kernel re-renders once per key press: wait until the picture changed and the kernel is idle again
    deadline = time.time() + 120
    while time.time() < deadline:
        now = d.execute_script(PANEL)
        if now and now[1] != before[1] and d.execute_script(f"return {NB}.sessionContext.session.kernel.status") == 'idle': break
        time.sleep(0.5)
    time.sleep(1)
    after = d.execute_script(PANEL)
    d.save_screenshot(str(tmp_path / 'panel_after.png'))
    assert after[1].startswith('data:image/png') and after[1] != before[1], "the warp picture did not change"
    p0, p1 = float(PSNR.search(before[0])[1]), float(PSNR.search(after[0])[1])
    assert p0 != p1, f"the printed PSNR did not change ({p0} dB)"
    assert (tmp_path / 'panel_after.png').stat().st_size > 10_000
