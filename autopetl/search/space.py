"""Search spaces as data: a YAML file turned into an Optuna define-by-run function.

A space file has four keys (see search_spaces/README.md):

    methods:          # which methods to search, each with its own parameters
      vpt:
        prompt_length: {type: int, low: 1, high: 100, log: true}
        deep: true                   # a plain value is fixed, not searched
    train:            # training hyper-parameters shared by every method
      lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
      epochs: 10
    sampler: tpe      # optional default: tpe, nsga2, random or grid
    description: ...  # optional

Optuna parameter names are ``method`` for the method, ``<method>.<option>`` for method options
(so two methods' ``prompt_length`` never share a distribution) and the bare name for training
hyper-parameters. A trial's config holds only the parameters its method uses.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from autopetl.errors import ConfigError
from autopetl.methods.options import method_names, method_spec
from autopetl.search.defaults import SAMPLERS
from autopetl.search.space_files import SPACES_DIR as SPACES_DIR  # re-exported: the built-in spaces
from autopetl.search.space_files import SpaceError, resolve_space_path
from autopetl.trial import TRAIN_KEYS, TRAIN_PREFIX, tune_config

_DIST_TYPES = ("float", "int", "categorical")


@dataclass(frozen=True)
class Param:
    """One searched parameter (a distribution) or a fixed value."""

    name: str  # the Optuna parameter name
    kind: str  # float, int, categorical or fixed
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None

    def suggest(self, trial: Any) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            assert self.low is not None and self.high is not None  # set for every range (parse)
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        return self.value

    def grid_values(self) -> list[Any]:
        """Every value this parameter can take; a float range needs a step to be finite."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "fixed":
            return [self.value]
        assert self.low is not None and self.high is not None  # set for every range (parse)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is not None:
            count = round((self.high - self.low) / self.step) + 1
            return [self.low + i * self.step for i in range(count)]
        raise ConfigError(
            f"{self.name}: the grid sampler needs choices or a stepped range, not a continuous "
            "float range"
        )


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; call it with an Optuna trial to sample one configuration.

    Instances are picklable (no lambdas or closures), as Ray's OptunaSearch needs.
    """

    name: str
    methods: dict[str, tuple[Param, ...]]
    train: tuple[Param, ...]
    sampler: str = "tpe"
    description: str = ""
    source: dict[str, Any] = field(default_factory=dict, compare=False)
    # The file as written (comments included), recorded with a search; empty when built in code.
    text: str = field(default="", compare=False)

    def params_of(self, method: str) -> tuple[Param, ...]:
        """A method's parameters: its options, its own training parameters, the shared rest."""
        own = self.methods[method]
        overridden = {p.name.partition(TRAIN_PREFIX)[2] for p in own if TRAIN_PREFIX in p.name}
        return (*own, *(p for p in self.train if p.name not in overridden))

    def __call__(self, trial: Any) -> dict[str, Any]:
        names = list(self.methods)
        method = names[0] if len(names) == 1 else trial.suggest_categorical("method", names)
        out: dict[str, Any] = {"method": method}
        for param in self.params_of(method):
            out[param.name] = param.suggest(trial)
        # The study-wide trial number is the trial's stable identity across Tuner restarts.
        return tune_config(out, trial.number)

    def configurations(self) -> list[dict[str, Any]]:
        """Every configuration of a finite space, as the space's trials hold them.

        The grid sampler (Optuna's BruteForceSampler) visits exactly these, each once: per
        method, the product of its own options and the training parameters, so methods with
        different options (a conditional space) are not crossed with each other's.
        """
        out: list[dict[str, Any]] = []
        for method in self.methods:
            params = self.params_of(method)
            for values in itertools.product(*(p.grid_values() for p in params)):
                out.append(
                    {"method": method, **{p.name: v for p, v in zip(params, values, strict=True)}}
                )
        return out


# A space is a page of YAML; anything far larger is a mistake or an attack (billion laughs).
MAX_SPACE_BYTES = 256 * 1024
MAX_SPACE_DEPTH = 16


class _SpaceLoader(yaml.SafeLoader):
    """YAML as a space needs it: no aliases (``&a``/``*a`` expand into billions of nodes, or
    recurse), no duplicate keys (the second silently won), and no nesting deeper than a space
    has (a 100k-deep file hit Python's recursion limit)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "aliases (*name) are not allowed in a search space", event.start_mark
            )
        depth = getattr(self, "_depth", 0) + 1
        if depth > MAX_SPACE_DEPTH:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"nested deeper than {MAX_SPACE_DEPTH} levels",
                self.peek_event().start_mark,
            )
        self._depth = depth
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth - 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_space_yaml(path: Path) -> Any:
    """The YAML data of a space file (see :func:`read_space_text`)."""
    return parse_space_yaml(read_space_text(path), path)


def read_space_text(path: Path) -> str:
    """The YAML of a space file, every way it can be unreadable a SpaceError."""
    try:
        size = path.stat().st_size
        if size > MAX_SPACE_BYTES:
            raise SpaceError(
                f"{path}: {size} bytes; a search space is at most {MAX_SPACE_BYTES // 1024} KiB"
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise SpaceError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpaceError(f"{path}: not UTF-8 text (a binary or UTF-16 file?)") from None
    if "\x00" in text:
        raise SpaceError(f"{path}: not a text file (it holds NUL bytes)")
    return text


def parse_space_yaml(text: str, path: Path) -> Any:
    try:
        return yaml.load(text, Loader=_SpaceLoader)
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise SpaceError(f"{path}: nested too deeply to be a search space") from None


def load_space(space: str | Path) -> SearchSpace:
    """Read and validate a space file; every mistake is a SpaceError naming the file and key."""
    path = resolve_space_path(space)
    text = read_space_text(path)
    parsed = parse_space(parse_space_yaml(text, path), name=path.stem, where=str(path))
    return dataclasses.replace(parsed, text=text)


def parse_space(data: Any, *, name: str, where: str) -> SearchSpace:
    if not isinstance(data, dict):
        raise SpaceError(f"{where}: a search space is a mapping with 'methods' and 'train'")
    unknown = sorted(set(data) - {"methods", "train", "sampler", "description"})
    if unknown:
        raise SpaceError(
            f"{where}: unknown key {unknown[0]!r}; expected methods, train, sampler, description"
        )
    methods_data = data.get("methods")
    if not isinstance(methods_data, dict) or not methods_data:
        raise SpaceError(f"{where}: 'methods' must map at least one method name to its parameters")
    methods: dict[str, tuple[Param, ...]] = {}
    for method, params in methods_data.items():
        if method not in method_names():
            raise SpaceError(
                f"{where}: methods.{method}: unknown method; known: {', '.join(method_names())}"
            )
        methods[method] = _parse_method(method, params or {}, where)
    train_data = data.get("train") or {}
    if not isinstance(train_data, dict):
        raise SpaceError(f"{where}: 'train' must be a mapping of training hyper-parameters")
    train = []
    for key, spec in train_data.items():
        if key not in TRAIN_KEYS:
            raise SpaceError(
                f"{where}: train.{key}: unknown training parameter; known: {', '.join(TRAIN_KEYS)}"
            )
        param = _parse_param(key, spec, f"{where}: train.{key}")
        _check_values(param, f"{where}: train.{key}", lambda v, k=key: _train_config(k, v))
        train.append(param)
    sampler = data.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise SpaceError(f"{where}: sampler: {sampler!r} is not one of {', '.join(SAMPLERS)}")
    space = SearchSpace(
        name, methods, tuple(train), sampler, str(data.get("description", "")), data
    )
    if sampler == "grid":
        try:
            space.configurations()
        except ConfigError as exc:
            raise SpaceError(f"{where}: {exc}") from exc
    return space


def _parse_method(method: str, params: Any, where: str) -> tuple[Param, ...]:
    if not isinstance(params, dict):
        raise SpaceError(f"{where}: methods.{method} must map option names to ranges or values")
    config_cls = method_spec(method).config_cls
    valid = {f.name for f in fields(config_cls)}
    out = []
    own_train = params.get("train", {})
    if not isinstance(own_train, dict):
        raise SpaceError(f"{where}: methods.{method}.train must map training parameters")
    for key, spec in own_train.items():
        at = f"{where}: methods.{method}.train.{key}"
        if key not in TRAIN_KEYS or key == "epochs":  # one horizon per search (the schedulers')
            allowed = ", ".join(k for k in TRAIN_KEYS if k != "epochs")
            raise SpaceError(f"{at}: not a per-method training parameter; known: {allowed}")
        param = _parse_param(f"{method}{TRAIN_PREFIX}{key}", spec, at)
        _check_values(param, at, lambda v, k=key: _train_config(k, v))
        out.append(param)
    for key, spec in params.items():
        if key == "train":
            continue
        at = f"{where}: methods.{method}.{key}"
        if key not in valid:
            raise SpaceError(
                f"{at}: unknown option; {method} has: {', '.join(sorted(valid)) or '(none)'}"
            )
        param = _parse_param(f"{method}.{key}", spec, at)
        _check_values(param, at, lambda v, k=key: config_cls.from_dict({k: v}))
        out.append(param)
    return tuple(out)


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE]\d+")


def _number(value: Any) -> Any:
    """PyYAML follows YAML 1.1, where ``1e30`` and ``1.0e30`` (no exponent sign) are strings."""
    return (
        float(value) if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()) else value
    )


def _parse_param(name: str, spec: Any, at: str) -> Param:
    if not isinstance(spec, dict):
        return Param(name, "fixed", value=_number(spec))
    spec = {
        k: ([_number(c) for c in v] if k == "choices" and isinstance(v, list) else _number(v))
        for k, v in spec.items()
    }
    kind = spec.get("type")
    if kind not in _DIST_TYPES:
        raise SpaceError(f"{at}: type must be one of {', '.join(_DIST_TYPES)}, got {kind!r}")
    allowed = (
        {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    )
    extra = sorted(set(spec) - allowed)
    if extra:
        raise SpaceError(f"{at}: unknown field {extra[0]!r} for a {kind} distribution")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{at}: choices must be a non-empty list")
        return Param(name, kind, choices=tuple(choices))
    low, high, log, step = (
        spec.get("low"),
        spec.get("high"),
        spec.get("log", False),
        spec.get("step"),
    )
    if not isinstance(log, bool):  # 'no' in quotes is a string, and bool('no') is True
        raise SpaceError(f"{at}: log must be true or false, got {log!r}")
    for label, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise SpaceError(f"{at}: {label} must be a finite number, got {v!r}")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise SpaceError(f"{at}: an int range needs integer low and high")
    if not low < high:
        raise SpaceError(f"{at}: empty range: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise SpaceError(f"{at}: a log range needs low > 0, got {low}")
    if log and step is not None:
        raise SpaceError(f"{at}: step and log cannot be combined")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, int | float) or not math.isfinite(step):
            raise SpaceError(f"{at}: step must be a finite number, got {step!r}")
        if not 0 < step <= high - low:
            raise SpaceError(f"{at}: step must be above 0 and at most high - low, got {step}")
        if kind == "int" and not float(step).is_integer():
            raise SpaceError(f"{at}: an int range needs an integer step, got {step}")
    return Param(name, kind, low=low, high=high, log=log, step=step)


def _train_config(key: str, value: Any) -> Any:
    """A TrainConfig with one value set: the trainer's own checks of it (without torch, as the
    methods' options are checked: :mod:`autopetl.train_config`, :mod:`autopetl.methods.options`)."""
    from autopetl.train_config import TrainConfig

    return TrainConfig(**{key: value})


def edge_values(param: Param) -> list[Any]:
    """The values that bound what a parameter can take: its fixed value, its choices, or its
    range's two ends."""
    values = (
        [param.value] if param.kind == "fixed" else list(param.choices) or [param.low, param.high]
    )
    return [int(v) for v in values] if param.kind == "int" else values


def _check_values(param: Param, at: str, build: Any) -> None:
    """Each endpoint or choice must be a value the method or trainer accepts."""
    for value in edge_values(param):
        try:
            build(value)
        except ConfigError as exc:
            raise SpaceError(f"{at}: {exc}") from exc
        except TypeError as exc:
            raise SpaceError(f"{at}: bad value {value!r} ({exc})") from exc


def with_epochs(space: SearchSpace, epochs: int) -> SearchSpace:
    """The same space with ``epochs`` fixed (``--epochs`` overrides the file).

    A fixed warm-up keeps its share of the training: vpt_paper.yaml's 10 of 100 epochs become 1
    of 10 with ``--epochs 10`` (kept at 10, the whole run would be warm-up).
    """
    scale = epochs / max_epochs(space)

    def rescaled(p: Param) -> Param:
        if p.name == "warmup_epochs" and p.kind == "fixed" and scale < 1:
            return Param(p.name, "fixed", value=float(p.value) * scale)
        return p

    train = (
        *(rescaled(p) for p in space.train if p.name != "epochs"),
        Param("epochs", "fixed", value=epochs),
    )
    # The recorded source says what the trials ran (a resumed search, a learning-curve table).
    source_train = dict(space.source.get("train") or {})
    source_train.update({p.name: p.value for p in train if p.kind == "fixed"})
    source = {**space.source, "train": source_train}
    return SearchSpace(space.name, space.methods, train, space.sampler, space.description, source)


def restricted_to(space: SearchSpace, methods: list[str]) -> SearchSpace:
    """The same space over some of its methods only (a sub-table of a learning-curve table)."""
    unknown = sorted(set(methods) - set(space.methods))
    if unknown or not methods:
        raise ConfigError(
            f"space {space.name!r} has methods {', '.join(space.methods)}; got {', '.join(methods)}"
        )
    source_methods = space.source.get("methods") or {}
    source = {**space.source, "methods": {m: source_methods.get(m) for m in methods}}
    kept = {m: space.methods[m] for m in methods}
    return SearchSpace(space.name, kept, space.train, space.sampler, space.description, source)


def max_epochs(space: SearchSpace) -> int:
    """The most epochs any trial of this space trains (ASHA's horizon)."""
    for p in space.train:
        if p.name == "epochs":
            return int(max(p.grid_values()) if p.kind in ("categorical", "fixed") else p.high or 0)
    from autopetl.train_config import TrainConfig

    return TrainConfig().epochs
