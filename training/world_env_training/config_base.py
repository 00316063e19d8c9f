"""The base of every config: YAML round trip, dict conversion and a field check.

Model configs (``configuration_*``) and stage configs (``configs``) both build on it, so that
a model package never imports the command line's stage configs.
"""

from __future__ import annotations

from dataclasses import asdict, fields

import yaml


def _check(condition: bool, name: str, value, expected: str) -> None:
    if not condition:
        raise ValueError(f"{name}={value!r}: expected {expected}")


class StageConfig:
    """Shared helpers: YAML round trip and dict conversion."""

    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str):
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
        return cls.from_dict(data)
