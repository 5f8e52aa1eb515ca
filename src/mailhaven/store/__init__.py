"""Storage: the interface (api.py) and its backends."""

from __future__ import annotations

from ..config import Config
from .api import Store


def create_store(config: Config) -> Store:
    """The backend the configuration names (not yet opened)."""
    if config.store.backend == "postgres":
        from .postgres import PostgresStore

        return PostgresStore(config.store.dsn, config.data_dir, schema=config.store.schema,
                             pool_size=config.store.pool_size)
    from .sqlite import SQLiteStore

    return SQLiteStore(config.data_dir)
