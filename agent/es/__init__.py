"""Evolution strategies on the policy's weights: EGGROLL low-rank populations, seed-only records."""

from agent.es.config import EsConfig
from agent.es.eggroll import EggRoll, Population
from agent.es.record import EsRecord

__all__ = ["EggRoll", "EsConfig", "EsRecord", "Population"]
