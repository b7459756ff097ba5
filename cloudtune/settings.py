"""Provider settings: `$CLOUDTUNE_HOME/config.yaml` < the spec's `providers.<name>` < environment.

Environment variables are `CLOUDTUNE_<PROVIDER>_<KEY>` (e.g. CLOUDTUNE_AWS_ROLE), plus each cloud's own
conventional ones, which the launcher's settings model lists in its `env_aliases` class attribute (key -> variable
names, first set wins). The result is validated by the launcher's settings model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from cloudtune.errors import SpecError, SpecIssue
from cloudtune.spec import JobSpec

def cloudtune_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("CLOUDTUNE_HOME") or Path.home() / ".cloudtune")


def _config_file(home: Path) -> dict[str, Any]:
    path = home / "config.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [SpecIssue("<yaml>", f"not valid YAML: {exc}", None, "fix or remove the file")]) from None
    return data if isinstance(data, dict) else {}


def _from_env(provider: str, model: type[BaseModel], environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    aliases: dict[str, tuple[str, ...]] = getattr(model, "env_aliases", {}) or {}
    for key, names in aliases.items():
        for name in names:
            if environ.get(name):
                values[key] = environ[name]
                break
    prefix = f"CLOUDTUNE_{provider.upper()}_"
    for key, field in model.model_fields.items():
        raw = environ.get(prefix + key.upper())
        if raw is None:
            continue
        origin = getattr(field.annotation, "__origin__", None)
        if origin is list or field.annotation == list[str]:
            values[key] = [v for v in raw.split(",") if v]
        elif origin is dict:
            import yaml

            values[key] = yaml.safe_load(raw) or {}
        else:
            values[key] = raw
    return values


def provider_settings(provider: str, spec: JobSpec, model: type[BaseModel], environ: Mapping[str, str] | None = None) -> BaseModel:
    """Merge the three sources for `provider` and validate the result with `model`."""
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = dict((_config_file(cloudtune_home(env)).get("providers") or {}).get(provider) or {})
    merged.update(spec.providers.section(provider))
    merged.update(_from_env(provider, model, env))
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        issues = [
            SpecIssue(f"providers.{provider}." + ".".join(str(p) for p in e["loc"]), str(e["msg"]), None,
                      f"set it in the spec, in {cloudtune_home(env) / 'config.yaml'} or as CLOUDTUNE_{provider.upper()}_<KEY>")
            for e in exc.errors(include_url=False)
        ]
        raise SpecError("settings", issues) from None
