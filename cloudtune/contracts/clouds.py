"""Per-cloud facts that a job spec relies on before any launcher is chosen: each cloud's object-store URI schemes
and the shape of a reference into each cloud's secret store.

They live here, not in the launcher plugins, because the spec (at the bottom) must tell a remote input from a local
path, and a secret reference from a secret value, at load time: with no provider named yet and whether or not a
plugin is installed. Each launcher checks its own stricter forms at plan time. Standard library only.
"""

from __future__ import annotations

import re

STORE_SCHEMES: dict[str, tuple[str, ...]] = {"aws": ("s3://",), "gcp": ("gs://",), "azure": ("azureml://",)}
"""Cloud name -> the URI schemes of its object store, which its jobs read as inputs where they run."""

WEB_SCHEMES = ("https://", "http://")
"""Inputs fetched over HTTP(S) by the job itself."""

REMOTE_SCHEMES: tuple[str, ...] = tuple(s for schemes in STORE_SCHEMES.values() for s in schemes) + WEB_SCHEMES
"""Every scheme that marks an input (or a model) as remote: not a path on this machine."""

SECRET_REFERENCES: dict[str, str] = {
    "aws": r"arn:aws[a-z-]*:secretsmanager:",  # an AWS Secrets Manager ARN
    "gcp": r"projects/[^/]+/secrets/[^/]+/versions/",  # a Secret Manager secret version
    "azure": r"https://[^/]+\.vault\.azure\.net/secrets/",  # an Azure Key Vault secret URI
}
"""Cloud name -> a regular expression matching the start of a reference into its secret store."""

SECRET_REF = re.compile("^(" + "|".join(SECRET_REFERENCES.values()) + ")")
"""A secret reference of any cloud (a value that matches none is taken for a secret value and refused)."""


def is_remote(uri: str) -> bool:
    """Whether `uri` names a remote object (a cloud store or HTTP(S) URI), not a path on this machine."""
    return str(uri).startswith(REMOTE_SCHEMES)
