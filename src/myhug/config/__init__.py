"""Typed settings: `myhug.toml` in the data dir plus `MYHUG_<SECTION>__<KEY>` overrides."""

from myhug.config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
