"""One ``plugins:`` entry of a route, as routes.yaml writes it: ``{use: NAME, ...options}``.

The options are checked by the plugin's own ``Options`` model when the registry loads it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

# Option names never shown in /admin/routes or logs (jwt's secret, and the like).
SECRET_OPTIONS = frozenset({"secret", "password", "token", "private_key"})


class PluginSpec(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    use: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_serializer(mode="wrap")
    def _redacted(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for key in SECRET_OPTIONS & data.keys():
                data[key] = "<redacted>"
        return data
