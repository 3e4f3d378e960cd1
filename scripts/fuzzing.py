"""What the fuzz harnesses (scripts/fuzz_*.py) share: seed a new corpus folder, then hand over to libFuzzer."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import atheris


def fuzz(one_input: Callable[[bytes], None], seed_corpus: Callable[[Path], None]) -> None:
    """libFuzzer on `one_input` with the command line's flags; a corpus folder named there that does not exist yet
    is made by `seed_corpus` first."""
    corpus = next((Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")), None)
    if corpus is not None and not corpus.exists():
        seed_corpus(corpus)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
