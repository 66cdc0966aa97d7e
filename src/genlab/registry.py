"""Name -> declaration tables: model families, data kinds and applications.

Everything genlab can train on or do is registered here once, and every command, route and
page asks these tables instead of branching on names:

    @register_family("vae")            a model class (genlab/models/*.py)
    register_data_kind(DataKind(...))  a kind of data: its spec, loader, catalogue, evaluation
                                       and how `genlab sample` shows it (genlab/kinds/*.py)
    register_application(Application(...))
                                       something a trained model can be applied to: its
                                       function, CLI options, HTTP route and studio entry
                                       (genlab/apps/*.py)

This module sits at the bottom of the layers (it imports only `errors`), so any module may
register. The built-in declarations are imported by module name the first time a table is
read, as plugins would be (`BUILTIN_MODULES`); a third-party package registers the same way
from its own module, or through the `genlab.plugins` entry-point group.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from .errors import GenlabError

# The modules whose import registers genlab's own families, data kinds and applications.
BUILTIN_MODULES = {
    "families": ("genlab.models.vae", "genlab.models.gan", "genlab.models.transformer", "genlab.models.rnn",
                 "genlab.models.superres", "genlab.models.denoiser", "genlab.models.pianoroll",
                 "genlab.models.events", "genlab.models.multvae", "genlab.models.ease",
                 "genlab.models.diffusion", "genlab.models.seq2seq"),
    "kinds": ("genlab.kinds.image", "genlab.kinds.text", "genlab.kinds.music", "genlab.kinds.pianoroll",
              "genlab.kinds.interactions", "genlab.kinds.pairs"),
    "applications": ("genlab.apps.inpaint", "genlab.apps.superres", "genlab.apps.denoise", "genlab.apps.anomaly",
                     "genlab.apps.interpolate", "genlab.apps.traverse", "genlab.apps.augment",
                     "genlab.apps.compress", "genlab.apps.compose", "genlab.apps.recommend"),
}
PLUGIN_GROUP = "genlab.plugins"  # entry points: each names a module that registers on import

FAMILIES: dict[str, type] = {}
DATA_KINDS: dict[str, "DataKind"] = {}
APPLICATIONS: dict[str, "Application"] = {}
_loaded: set[str] = set()


# ----------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Catalogue:
    """What `genlab datasets` prints for a data kind: a heading and name -> description, with
    each name's status ("cached", "embedded", "download", ...) from `status(name, data_root)`."""

    heading: str
    datasets: dict[str, str]
    status: Callable[[str, Any], str]


@dataclass(frozen=True)
class DataKind:
    """A kind of data (image, text, music events, piano roll, ...) and everything that follows from it.

    load(spec, resumed_run) -> the data object the Trainer batches (`num_examples`, `batch`,
        `model_fields`); resumed_run is the run directory when resuming (None otherwise).
    evaluate(model, **options) -> the result dict of `genlab eval` (options: against, n, seed,
        iwae_k, features, metrics, max_new_tokens, progress; a kind takes what it uses and `**_`).
    report(result) -> the lines `genlab eval` prints for that result.
    sample(model, options) -> what `genlab sample` does (options: model_dir, n, seed, label,
        output); prints its own summary.
    next_steps(run_dir) -> the "next:" line after `genlab train`.
    endpoint: the HTTP route that draws from this kind's models (for hints), or None.
    tokens_per_example(spec): throughput in tokens, for kinds whose examples are token windows.
    """

    name: str
    spec_class: type
    load: Callable[[Any, Any], Any]
    catalogue: Catalogue
    evaluate: Callable[..., dict]
    report: Callable[[dict], list[str]]
    sample: Callable[[Any, dict], None]
    next_steps: Callable[[Any], str]
    endpoint: str | None = None
    tokens_per_example: Callable[[Any], int] | None = None


@dataclass(frozen=True)
class HttpRoute:
    """An application's HTTP endpoint, built by genlab.serve from this declaration.

    body="multipart": `form` holds the fields besides `model` and the files, sent as form
    fields; `files` names the file fields: "one" (required), "optional" or "many" (the field
    repeats, 1..max_files files). body="json": `form` is the whole JSON body, `model` included.
    handler(model, form, files) runs on a worker thread with the loaded model, the validated
    form and the uploads (genlab.apps.common.Upload, or a list of them); it returns a JSON-able
    dict, or a FileReply. Which models list this route: by default those the application fits
    (its kinds and capability, `fits`); serves(data_kind, capabilities) narrows it where the
    route needs more than that.
    """

    path: str
    summary: str
    form: type
    handler: Callable[[Any, Any, dict], Any]
    serves: Callable[[str, frozenset], bool] | None = None
    body: str = "multipart"
    files: dict[str, Literal["one", "optional", "many"]] = field(default_factory=dict)
    max_files: int = 16


@dataclass(frozen=True)
class FileReply:
    """A handler's answer that is one file (a PNG, a MIDI file, ...) rather than JSON."""

    content: bytes
    media_type: str
    filename: str | None = None


@dataclass(frozen=True)
class Application:
    """Something a trained model can be applied to: `genlab apply NAME`, an HTTP route, a studio entry.

    add_arguments(parser) declares its CLI options (the model directory argument is added
    for it); run(model, args) is the CLI command, given the loaded model. kinds: the data
    kinds of the models it takes (checked before run). function: the Python API it wraps,
    shown in docs. studio: whether the studio lists it (a generic form is built from its
    HTTP route when the page has no hand-written panel for it).
    """

    name: str
    summary: str
    examples: str
    add_arguments: Callable[[Any], None]
    run: Callable[[Any, Any], Any]
    kinds: tuple[str, ...] = ("image",)
    capability: str | None = None
    function: Callable | None = None
    http: HttpRoute | None = None
    studio: bool = False
    check_arguments: Callable[[Any], None] | None = None  # run before the model loads: fail fast on bad options


# ----------------------------------------------------------------------------- registration


def register_family(name: str):
    def wrap(cls):
        FAMILIES[name] = cls
        cls.family = name
        return cls

    return wrap


def register_data_kind(kind: DataKind) -> DataKind:
    DATA_KINDS[kind.name] = kind
    return kind


def register_application(application: Application) -> Application:
    APPLICATIONS[application.name] = application
    return application


def unregister(table: dict, name: str) -> None:
    """Remove a declaration (tests that register toys clean up with this)."""
    table.pop(name, None)


# ----------------------------------------------------------------------------- lookup


def _load(group: str) -> None:
    if group in _loaded:
        return
    _loaded.add(group)
    for module in BUILTIN_MODULES[group]:
        importlib.import_module(module)
    if "plugins" not in _loaded:  # a plugin may add families, kinds and applications alike: load it for any table
        _loaded.add("plugins")
        from importlib.metadata import entry_points

        for entry in entry_points(group=PLUGIN_GROUP):
            importlib.import_module(entry.value)


def families() -> dict[str, type]:
    _load("families")
    return FAMILIES


def data_kinds() -> dict[str, DataKind]:
    _load("kinds")
    return DATA_KINDS


def applications() -> dict[str, Application]:
    _load("applications")
    return APPLICATIONS


def _lookup(table: dict, name: str, what: str, hint: str):
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table)) or "(none)"
        raise GenlabError(f"unknown {what} {name!r}", hint.format(known=known)) from None


def get_family(name: str) -> type:
    return _lookup(families(), name, "model family", "known families: {known}")


def get_data_kind(name: str) -> DataKind:
    return _lookup(data_kinds(), name, "data kind", "known kinds: {known}")


def get_application(name: str) -> Application:
    return _lookup(applications(), name, "application", "applications: {known} (genlab apply --help)")


def families_with(capability: str) -> list[str]:
    return sorted(name for name, cls in families().items() if capability in cls.capabilities)


def fits(app: Application, data_kind: str, capabilities) -> bool:
    """Whether a model of this kind with these capabilities can be given to `app`."""
    return data_kind in app.kinds and (app.capability is None or app.capability in capabilities)


def serves(app: Application, data_kind: str, capabilities) -> bool:
    """Whether `app`'s HTTP route lists a model of this kind with these capabilities."""
    caps = frozenset(capabilities)
    return app.http is not None and (app.http.serves(data_kind, caps) if app.http.serves is not None
                                      else fits(app, data_kind, caps))


def applications_for(data_kind: str, capabilities) -> list[str]:
    """The applications a model of this kind with these capabilities can be given to."""
    return [name for name, app in applications().items() if fits(app, data_kind, capabilities)]
