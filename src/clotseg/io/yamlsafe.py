"""YAML for configs and run files, read without aliases and written without them.

``yaml.safe_load`` runs no code, but it still expands aliases: a 400-byte file of nested
``*name`` references (the "billion laughs") unfolds into a billion-element list that
clotseg's checks then walk; ``train --config`` with such a file hung while taking
gigabytes. clotseg's own YAML never needs an alias, so an alias is refused wherever
clotseg reads YAML (``--config``, ``--set``, a run's ``config.yaml`` for ``report`` and
``--resume``, model export), as a ``yaml.YAMLError`` that every caller already reports
as a bad file, and nothing clotseg writes contains one.
"""

from __future__ import annotations

from typing import Any

import yaml


class _NoAliasLoader(yaml.SafeLoader):
    """``SafeLoader`` that stops at the first alias."""

    def compose_node(self, parent, index):  # noqa: D102 - PyYAML hook
        if self.check_event(yaml.events.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not accepted in clotseg files", mark)
        return super().compose_node(parent, index)


class _NoAliasDumper(yaml.SafeDumper):
    """``SafeDumper`` that writes a repeated object out again instead of as an alias."""

    def ignore_aliases(self, data: Any) -> bool:  # noqa: D102 - PyYAML hook
        return True


def load(text: str) -> Any:
    """Parse YAML ``text`` like ``yaml.safe_load``, refusing aliases."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def dump(data: Any, **kwargs: Any) -> str:
    """``yaml.safe_dump`` that never writes an alias (so :func:`load` reads it back)."""
    return yaml.dump(data, Dumper=_NoAliasDumper, **kwargs)
