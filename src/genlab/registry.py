"""Name -> class tables for model families.

Adding a family is one new file in genlab/models plus `@register_family("name")` on its
model class; `genlab.load` and `genlab train` find it through this table.
"""

from __future__ import annotations

from .errors import GenlabError

FAMILIES: dict[str, type] = {}


def register_family(name: str):
    def wrap(cls):
        FAMILIES[name] = cls
        cls.family = name
        return cls

    return wrap


def get_family(name: str) -> type:
    _import_builtin_families()
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(FAMILIES)) or "(none)"
        raise GenlabError(f"unknown model family {name!r}", f"known families: {known}") from None


def _import_builtin_families() -> None:
    # Importing the modules runs their @register_family decorators.
    from .models import denoiser, gan, rnn, superres, transformer, vae  # noqa: F401
    from .models import pianoroll  # noqa: F401
    from .models import events  # noqa: F401  (gpt-music, lstm-music)
