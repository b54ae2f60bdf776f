"""README.md is rendered from nbs/index.ipynb (quarto, which `nbdev_readme` needs, is not installed here).
`python tests/readme.py` writes it; `python tests/readme.py --check` fails if it is stale."""
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

if __name__ == '__main__':
    text = render()
    readme = root/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit("FAIL: README.md is stale; run `python tests/readme.py` after editing nbs/index.ipynb")
        print("README.md matches nbs/index.ipynb")
    else:
        readme.write_text(text); print(f"wrote {readme}")
