"""README.md is rendered from nbs/index.ipynb (quarto, which `nbdev_readme` needs, is not installed here).
`python tests/readme.py` writes it; `python tests/readme.py --check` fails if it is stale, or if the README's first
code block is not two commands (install and run the main job; run the tests) whose second is the one `.ci/run` runs."""
import json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def render(nb_path=root/'nbs'/'index.ipynb') -> str:
    nb = json.loads(Path(nb_path).read_text())
    out = []
    for c in nb['cells']:
        src = ''.join(c['source']).strip()
        if not src or src.startswith('#|'): continue
        if c['cell_type'] == 'markdown':
            out.append(src)
        else:
            out.append(f"```python\n{src}\n```")
    return '\n\n'.join(out) + '\n'

def first_commands(text:str) -> list[str]:
    "The lines of the README's first code block."
    m = re.search(r"```sh\n(.*?)```", text, re.S)
    return [l for l in m.group(1).splitlines() if l.strip()] if m else []

def check_commands(text:str):
    cmds = first_commands(text)
    if len(cmds) != 2:
        sys.exit(f"FAIL: the README's first code block must hold two commands (run; test), has {len(cmds)}")
    if cmds[1] not in (root/'.ci'/'run').read_text().splitlines():
        sys.exit(f"FAIL: the README's test command {cmds[1]!r} is not the command .ci/run runs")

if __name__ == '__main__':
    text = render()
    readme = root/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit("FAIL: README.md is stale; run `python tests/readme.py` after editing nbs/index.ipynb")
        check_commands(text)
        print("README.md matches nbs/index.ipynb; .ci/run runs its test command")
    else:
        readme.write_text(text); print(f"wrote {readme}")
