"""Resolve secret references to values inside the container, at start, into the process environment only.

Values are never printed, written to disk or sent back. A variable already present in the
environment (the local launcher passes the caller's own value through) is kept as is.
"""

from __future__ import annotations

from collections.abc import Mapping


def _aws(ref: str) -> str:
    try:
        import boto3
    except ImportError as exc:
        raise RuntimeError("resolving an AWS Secrets Manager reference needs boto3 in the image: pip install boto3") from exc
    region = ref.split(":")[3]
    return boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=ref)["SecretString"]


def _gcp(ref: str) -> str:
    try:
        from google.cloud import secretmanager
    except ImportError as exc:
        raise RuntimeError("resolving a GCP secret needs google-cloud-secret-manager in the image") from exc
    client = secretmanager.SecretManagerServiceClient()
    return client.access_secret_version(name=ref).payload.data.decode("utf-8")


class _AzureMLOnBehalfOf:
    """The submitting user's token in an Azure ML job that runs as `user_identity`: Azure ML serves it at
    OBO_ENDPOINT (GET ?resource=<audience>, a managed-identity-style JSON answer), which azure-identity's
    DefaultAzureCredential does not read. Source: azure-ai-ml, azure.ai.ml.identity.AzureMLOnBehalfOfCredential."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get_token(self, *scopes: str, **kwargs: object) -> object:
        import json
        import urllib.parse
        import urllib.request

        from azure.core.credentials import AccessToken

        resource = scopes[0].removesuffix("/.default") if scopes else "https://vault.azure.net"
        query = urllib.parse.urlencode({"resource": resource})
        request = urllib.request.Request(f"{self.url}{'&' if '?' in self.url else '?'}{query}", headers={"Metadata": "true"})
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - Azure ML's own endpoint
            answer = json.loads(resp.read())
        return AccessToken(answer["access_token"], int(answer["expires_on"]))

    def close(self) -> None:
        pass


def _azure(ref: str) -> str:
    import os

    try:
        from azure.identity import DefaultAzureCredential
        from azure.keyvault.secrets import SecretClient
    except ImportError as exc:
        raise RuntimeError("resolving an Azure Key Vault secret needs azure-identity and azure-keyvault-secrets in the image") from exc
    vault, _, rest = ref.partition("/secrets/")
    name, _, version = rest.partition("/")
    obo = os.environ.get("OBO_ENDPOINT")  # a user_identity job; else the compute's managed identity (AZURE_CLIENT_ID)
    credential = _AzureMLOnBehalfOf(obo) if obo else DefaultAzureCredential()
    return SecretClient(vault_url=vault, credential=credential).get_secret(name, version or None).value


def resolve_secrets(refs: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """NAME -> value for every reference not already set in `environ`."""
    values: dict[str, str] = {}
    for name, ref in refs.items():
        if name in environ:
            continue
        if ref.startswith("arn:aws"):
            values[name] = _aws(ref)
        elif ref.startswith("projects/"):
            values[name] = _gcp(ref)
        else:
            values[name] = _azure(ref)
    return values
