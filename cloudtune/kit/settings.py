"""Provider settings checks shared by the launchers."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from cloudtune.errors import UnsupportedSpec


def require(settings: BaseModel, provider: str, keys: Sequence[str]) -> None:
    """Refuse, in one error that lists them all, the settings in `keys` that are not set."""
    missing = [k for k in keys if not getattr(settings, k)]
    if not missing:
        return
    aliases: dict[str, tuple[str, ...]] = getattr(type(settings), "env_aliases", {}) or {}
    ways = []
    for key in missing:
        env = (f"CLOUDTUNE_{provider.upper()}_{key.upper()}",) + tuple(aliases.get(key, ()))
        ways.append(f"providers.{provider}.{key} (or {' / '.join(env)})")
    raise UnsupportedSpec(
        f"{', '.join(f'providers.{provider}.{k}' for k in missing)} {'is' if len(missing) == 1 else 'are'} not set",
        fix="set " + "; ".join(ways) + " in the spec, in $CLOUDTUNE_HOME/config.yaml or in the environment",
    )
