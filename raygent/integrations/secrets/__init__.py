"""Secrets providers (environment, file, HashiCorp Vault) and the resolver the ToolGateway uses at call
time. Only the gateway process builds these: an agent never holds a secret."""

from raygent.integrations.secrets.base import SecretProvider, SecretValue, pick_key
from raygent.integrations.secrets.known import KnownSecrets
from raygent.integrations.secrets.resolver import SecretResolver, build_providers

__all__ = ["KnownSecrets", "SecretProvider", "SecretResolver", "SecretValue", "build_providers", "pick_key"]
