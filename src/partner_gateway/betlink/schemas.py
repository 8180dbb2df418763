"""BetLink's wire models: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class LaunchTokenResponse(CamelModel):
    """Exactly what the frontend hands the BetLink iframe in `betlink-operator-auth-token-response`."""

    launch_token: str
    user_id: str
    operator_id: str
