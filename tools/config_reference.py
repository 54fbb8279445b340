"""Write docs/configuration.md from the configuration model (the model is the reference).

    python tools/config_reference.py            # rewrite docs/configuration.md
    python tools/config_reference.py --check    # exit 1 if the file is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

from contimg.config import Config, load_config

HEADER = """# Configuration reference

Generated from `contimg/config.py` by `python tools/config_reference.py`; a test fails when this
file and the model disagree. Configs are TOML files in `configs/` (`dsa110`, `quick`, `test`)
or any path; `base = "dsa110"` inherits another config table by table. Unknown keys and bad
values are refused at start-up with the key named. Environment overrides:
`CONTIMG__<TABLE>__<KEY>=<TOML value>`, e.g. `CONTIMG__IMAGE__NITER=500`.

"""


def render() -> str:
    dsa = load_config("dsa110", use_env=False)
    lines = [HEADER]
    for table, field in Config.model_fields.items():
        if table == "name":
            continue
        model = field.annotation
        lines.append(f"## `[{table}]`\n")
        if model.__doc__:
            lines.append(model.__doc__.strip() + "\n")
        lines.append("| key | type | default | dsa110 | meaning |")
        lines.append("| --- | --- | --- | --- | --- |")
        for key, f in model.model_fields.items():
            typ = str(f.annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
            default = f.get_default(call_default_factory=True)
            value = getattr(getattr(dsa, table), key)
            meaning = (f.description or "").replace("|", "\\|")
            lines.append(f"| `{key}` | `{typ}` | `{default!r}` | `{value!r}` | {meaning} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    path = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    text = render()
    if "--check" in sys.argv:
        return 0 if path.exists() and path.read_text() == text else 1
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
