"""Settings from the environment: see `config.settings`."""

from config.settings import ConfigError, from_env

__all__ = ["ConfigError", "from_env"]
