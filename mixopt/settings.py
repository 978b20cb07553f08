"""Validating a plug-in's settings (an optimizer's, a mixing schedule's) against its pydantic model.

It sits below both the optimizers and the schedules, which each validate their own settings with it, so neither
imports the other for it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError


def validate_settings(name: str, model: type[BaseModel], settings: dict[str, Any]) -> Any:
    """Validate an optimizer's settings; the error is one sentence naming the setting and the allowed ones."""
    try:
        return model.model_validate(settings)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        allowed = ", ".join(sorted(model.model_fields)) or "none"
        if err["type"] == "extra_forbidden":
            raise ValueError(f"{name} has no setting {key!r}; its settings are: {allowed}") from None
        raise ValueError(f"setting {key!r} of {name}: {err['msg']}") from None
