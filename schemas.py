"""Pydantic request/response schemas of the REST API, kept apart from the ORM models.

Two dialects share the ``/v1/convai`` paths:

* the flat spec shape (``POST /v1/convai/agents`` with ``system_prompt``, ``voice_id`` …), and
* the ElevenLabs Conversational AI shape (``conversation_config``, ``agent_id``, ``metadata`` …).

Responses are supersets that carry both, so one GET serves the web console and the official
``elevenlabs`` SDK alike. Where the two vocabularies disagree (``status`` of a conversation), the
value is this service's own and the SDK (which types it ``Literal[...] | Any``) still parses it.

Each resource's shapes live in their own module of ``shapes/``; this module re-exports them all, so
``from schemas import AgentCreate`` reaches every shape.
"""

import shapes.agent_tests
import shapes.agent_versions
import shapes.agents
import shapes.analytics
import shapes.campaigns
import shapes.common
import shapes.conversations
import shapes.dnc
import shapes.experiments
import shapes.outbound
import shapes.phone_numbers
import shapes.playbooks
import shapes.seat
import shapes.tools
import shapes.webhooks
from shapes.agent_tests import *  # noqa: F403
from shapes.agent_versions import *  # noqa: F403
from shapes.agents import *  # noqa: F403
from shapes.analytics import *  # noqa: F403
from shapes.campaigns import *  # noqa: F403
from shapes.common import *  # noqa: F403
from shapes.conversations import *  # noqa: F403
from shapes.dnc import *  # noqa: F403
from shapes.experiments import *  # noqa: F403
from shapes.outbound import *  # noqa: F403
from shapes.phone_numbers import *  # noqa: F403
from shapes.playbooks import *  # noqa: F403
from shapes.seat import *  # noqa: F403
from shapes.tools import *  # noqa: F403
from shapes.webhooks import *  # noqa: F403

__all__ = [
    *shapes.common.__all__,
    *shapes.tools.__all__,
    *shapes.playbooks.__all__,
    *shapes.agents.__all__,
    *shapes.conversations.__all__,
    *shapes.phone_numbers.__all__,
    *shapes.webhooks.__all__,
    *shapes.outbound.__all__,
    *shapes.dnc.__all__,
    *shapes.campaigns.__all__,
    *shapes.agent_tests.__all__,
    *shapes.seat.__all__,
    *shapes.agent_versions.__all__,
    *shapes.analytics.__all__,
    *shapes.experiments.__all__,
]
