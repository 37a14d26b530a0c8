"""The models a server serves: each a name, a source, and options of its own (``ModelSpec``).

They come from three settings, in this order:

- ``VOCOS_MODELS``: comma-separated ``name=source`` pairs (a Hub id or a local directory);
- ``VOCOS_MODELS_FILE``: a YAML file, ``models:`` mapping each name to ``source`` and its options
  (``revision``, ``device``, ``dtype``, ``encodec_weights``, and the batching settings);
- ``VOCOS_MEL_MODEL`` and ``VOCOS_ENCODEC_MODEL``, which define the models named ``mel`` and
  ``encodec``. Their defaults (the official Hub models) apply only when neither of the two above is
  given; set explicitly, they add their model to the others.

An endpoint's default model is the first of its kind. Options a model leaves out are the server's.
With no model setting at all and the official models out of reach, the server serves the built-in
demo model instead (``vocos_core.builtin``), saying so in one warning; explicit settings never fall back.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, get_args

import yaml
from pydantic import TypeAdapter, ValidationError

from service.settings import DEVICE_PATTERN, DISABLED, Dtype, Settings

# Held with fullmatch: re's $ also matches before a final newline, which a quoted YAML name may end with.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Options a model may set for itself; each defaults to the server's setting of the same name.
BATCHING = ("max_batch_size", "max_wait_ms", "max_batch_frames", "bucket_ratio", "max_queue_size")


class RegistryError(ValueError):
    """The model settings are inconsistent; the message names the setting and what was expected."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One served model: ``name`` (the ``?model=`` of requests), its ``source`` and its options."""

    name: str
    source: str
    revision: str | None = None
    device: str | None = None
    dtype: Dtype | None = None
    encodec_weights: str | None = None
    # The batching options the model's own entry sets; ``batching``: every option, the server's settings filling
    # in the rest (``resolved``), so that resolving again with other settings (a test's) fills in theirs.
    own_batching: Mapping[str, float] = dataclasses.field(default_factory=dict)
    batching: Mapping[str, float] = dataclasses.field(default_factory=dict)
    legacy: bool = False  # defined by VOCOS_MEL_MODEL / VOCOS_ENCODEC_MODEL: must be of that kind
    # A default nobody set (no model setting at all): when it cannot be obtained, the mel model falls
    # back to the built-in demo and the EnCodec model is left out (service.runtime.models).
    default: bool = False
    # Where ``device`` came from, for a start-up error about it: once resolved, the model's own device and the
    # server's may be equal, and only the one the model left out is the server's to change.
    device_setting: str = "VOCOS_DEVICE"
    # The setting that defines the model (``VOCOS_MODELS``, ``VOCOS_MODELS_FILE <path>``, ``VOCOS_MEL_MODEL``), for
    # a start-up error to name where to fix it: with several settings, a name alone does not say which to edit.
    origin: str = "VOCOS_MODELS"

    def resolved(self, settings: Settings) -> ModelSpec:
        """This spec with every option it leaves out taken from the server's ``settings``."""
        return dataclasses.replace(
            self.with_batching_of(settings),
            device_setting="VOCOS_DEVICE" if self.device is None else f"{self.origin}: model {self.name!r}: device",
            revision=self.revision if self.revision is not None else settings.revision,
            device=self.device or settings.device,
            dtype=self.dtype or settings.dtype,
            encodec_weights=self.encodec_weights or settings.encodec_weights,
        )

    def with_batching_of(self, settings: Settings) -> ModelSpec:
        """This spec with the batching options its entry leaves out taken from ``settings`` (its other options
        as they are: a resolved spec stays resolved)."""
        batching = {key: self.own_batching.get(key, getattr(settings, key)) for key in BATCHING}
        return dataclasses.replace(self, batching=batching)


def model_specs(settings: Settings) -> tuple[ModelSpec, ...]:
    """Every model of ``settings``, resolved, in the order of the module docstring."""
    from_file = _file(Path(settings.models_file).expanduser()) if settings.models_file else []  # ~ as in sources
    specs = [*_pairs(settings.models), *from_file]
    listed, explicit = bool(specs), settings.model_fields_set
    for name, field in (("mel", "mel_model"), ("encodec", "encodec_model")):
        source = getattr(settings, field)
        if source.lower() == DISABLED or (listed and field not in explicit):
            continue
        setting = f"VOCOS_{field.upper()}"
        other = next((spec for spec in specs if spec.name == name), None)
        if other is not None:
            raise RegistryError(f"model name {name!r} is defined twice: by {setting} and by {other.origin}; rename "
                                f"the one in {other.origin}, or set {setting} to none")
        # Only with no model setting at all (an explicit `none` included) may a default fall back.
        specs.append(ModelSpec(name, source, legacy=True, default=not explicit & {"mel_model", "encodec_model"},
                               origin=setting))
    _check_unique(specs)
    return tuple(spec.resolved(settings) for spec in specs)


def _check_unique(specs: list[ModelSpec]) -> None:
    """RegistryError naming each name given twice and the settings that give it: a request could reach only one."""
    origins: dict[str, list[str]] = {}
    for spec in specs:
        origins.setdefault(spec.name, []).append(spec.origin)
    twice = [f"{name!r} ({len(where)} times, by {' and '.join(dict.fromkeys(where))})"
             for name, where in origins.items() if len(where) > 1]
    if twice:
        raise RegistryError(f"model names must be unique; defined more than once: {', '.join(twice)}; rename one "
                            "of each")


def _pairs(text: str) -> list[ModelSpec]:
    specs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, source = (s.strip() for s in item.partition("="))
        if not sep or not source:
            raise _not_pairs(item)
        specs.append(ModelSpec(_checked_name(name, "VOCOS_MODELS"), source, origin="VOCOS_MODELS"))
    if text.strip() and not specs:  # set, yet naming no model: a mistake, not "no model configured"
        raise _not_pairs(text)
    return specs


def _not_pairs(text: str) -> RegistryError:
    # A models file given as VOCOS_MODELS, which the two settings' names make easy.
    file = text.strip().lower().endswith((".yaml", ".yml", ".json"))
    hint = "; a models file goes in VOCOS_MODELS_FILE" if file else ""
    return RegistryError(f"VOCOS_MODELS: expected name=source pairs separated by commas, got {text[:80]!r}{hint}")


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # A merge key (``<<: *defaults``) is no key of its own: constructing it fails, and the keys it brings
        # may be overridden, as YAML allows, so only the mapping's own keys are compared.
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value if key.tag != _MERGE_TAG]
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise yaml.constructor.ConstructorError(None, None, f"keys given more than once: {twice}",
                                                    node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _file(path: Path) -> list[ModelSpec]:
    where = f"VOCOS_MODELS_FILE {path}"
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader: data only
    except UnicodeDecodeError as exc:
        raise RegistryError(f"{where}: cannot read it as YAML: not UTF-8 text ({exc.reason} at byte {exc.start})"
                            ) from None
    except OSError as exc:  # no YAML was read: name the file looked for, as a relative path depends on the directory
        relative = "" if path.is_absolute() else ", a relative path being taken from the current directory"
        raise RegistryError(f"{where}: cannot read {path.absolute()}: {exc.strerror or exc}; expected a YAML "
                            f"file{relative}") from None
    except yaml.YAMLError as exc:
        raise RegistryError(f"{where}: cannot read it as YAML: {_yaml_problem(exc)}") from None
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, dict) or not models:
        raise RegistryError(f"{where}: expected a mapping 'models:' of model names to their options; "
                            f"{_not_models(document)}")
    # Anything beside 'models:' would be ignored: a model indented one level too little would not be served,
    # an option written for every model would apply to none.
    others = sorted(str(key) for key in document if key != "models")
    if others:
        raise RegistryError(f"{where}: unknown top-level keys {others}; expected only 'models:', each model's "
                            "options under its name")
    odd = [name for name in models if not isinstance(name, str)]
    if odd:  # YAML reads yes, null, 1 and 1.0 as a bool, None and numbers: two of them may even be one
        raise RegistryError(f"{where}: model names must be strings; YAML reads a name written as yes/no, on/off, "
                            f"true/false, null or a number as another type (here {odd[0]!r}): quote it")
    return [_spec(name, options, where) for name, options in models.items()]


def _not_models(document: Any) -> str:
    """What a models file holds instead of ``models:`` with models under it, for the error to say what to change."""
    if document is None:
        return "the file is empty (or holds only comments)"
    if not isinstance(document, dict):
        return f"got {_yaml_kind(document)} at the top level"
    if "models" not in document:
        keys = sorted(str(key) for key in document)
        if {"feature_extractor", "backbone", "head"} & set(keys):
            return ("got a checkpoint's config.yaml: serve its directory with VOCOS_MODELS=name=DIRECTORY, or list "
                    "it as the source of a model under 'models:'")
        return f"got the top-level keys {keys}: write 'models:' first and each model under it, indented"
    models = document["models"]
    if models is None or models == {}:
        return "'models:' names no model: write each as 'name: source' under it, indented"
    return f"'models:' holds {_yaml_kind(models)}: write each model as 'name: source' under it, not as a list item"


def _yaml_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list ('- ' items)"
    return f"a {type(value).__name__} ({str(value)[:40]!r})"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line with its line and column in the file (PyYAML names the text it read as
    "<unicode string>"), and the fix of the mistake JSON files make, a tab."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return " ".join(str(exc).split())
    mark = exc.problem_mark or exc.context_mark
    what = " ".join(part for part in (exc.context, exc.problem) if part)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    tab = " (YAML refuses tabs: indent with spaces)" if "'\\t'" in what else ""
    return f"{' '.join(what.split())}{at}{tab}"


def _spec(name: str, options: Any, where: str) -> ModelSpec:
    checked = _checked_name(name, where)
    if isinstance(options, str):
        options = {"source": options}
    allowed = {"source", "revision", "device", "dtype", "encodec_weights", *BATCHING}
    # Before the source: a misspelt 'source' is an unknown option, which says more than "needs a 'source'".
    unknown = sorted(str(key) for key in (options if isinstance(options, dict) else {}) if key not in allowed)
    if unknown:
        raise RegistryError(f"{where}: model {name!r}: unknown options {unknown}; expected among {sorted(allowed)}")
    if not isinstance(options, dict) or not isinstance(options.get("source"), str) or not options["source"].strip():
        raise RegistryError(f"{where}: model {name!r} needs a 'source' (a Hub id or a local directory)")
    device, dtype = (_lower(options.get(key)) for key in ("device", "dtype"))  # any case, as the variables
    if device is not None and not DEVICE_PATTERN.fullmatch(str(device)):
        raise RegistryError(f"{where}: model {name!r}: device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if dtype is not None and dtype not in get_args(Dtype):
        raise RegistryError(f"{where}: model {name!r}: dtype must be one of {get_args(Dtype)}, got {dtype!r}")
    batching = {key: _batching_option(options[key], key, name, where) for key in BATCHING if key in options}
    return ModelSpec(
        checked,
        options["source"].strip(),
        revision=_optional_text(options.get("revision"), "revision", name, where),
        device=None if device is None else str(device),
        dtype=dtype,
        encodec_weights=_optional_text(options.get("encodec_weights"), "encodec_weights", name, where),
        own_batching=batching,
        origin=where,
    )


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _batching_option(value: Any, key: str, name: str, where: str) -> float:
    """A model's own batching option, held to the bounds of the server setting of the same name."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RegistryError(f"{where}: model {name!r}: {key} must be a number, got {value!r}{_text_number(value)}")
    field = Settings.model_fields[key]
    try:
        bounded: Any = Annotated[(field.annotation, *field.metadata)]  # the setting's type and bounds
        number: float = TypeAdapter(bounded).validate_python(value)
        return number
    except ValidationError as exc:
        raise RegistryError(f"{where}: model {name!r}: {key} must be within VOCOS_{key.upper()}'s bounds "
                            f"({exc.errors()[0]['msg']}), got {value!r}") from None


def _text_number(value: Any) -> str:
    """Why a number written in the file may have come as text: quotes, or YAML 1.1, which reads 1e-3 and 1.0e3 (no
    dot, or no sign after the e) as strings, though the person who wrote them meant numbers."""
    try:
        number = float(value) if isinstance(value, str) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        return ""
    plain = format(Decimal(repr(number)), "f")  # no exponent: 1e-07 would be text again
    plain = plain.rstrip("0").rstrip(".") if "." in plain else plain
    why = ("YAML reads an exponent only with a dot and a signed exponent, such as 1.0e-3"
           if "e" in value.lower() else "quoted, or a form YAML 1.1 does not read as a number")
    return f" (text: {why}; write {plain})"


def _checked_name(name: str, where: str) -> str:
    if not _NAME.fullmatch(name):
        raise RegistryError(
            f"{where}: model name {name[:80]!r} must be 1-64 characters of letters, digits, '.', '_' or '-', "
            "beginning with a letter or digit"
        )
    return name


def _optional_text(value: Any, key: str, name: str, where: str) -> str | None:
    """A text option, or None when left out or empty. Not a number or a date turned back into text: YAML
    reads the revision 1.10 as the float 1.1 and 0123 as the octal 83, which would fetch another revision."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise RegistryError(f"{where}: model {name!r}: {key} must be a string; YAML read it as "
                            f"{type(value).__name__} {value!r}: quote it")
    return value.strip() or None
