"""Federated mode: sites send aggregates only, a coordinator pools them.

``write_share(analysis, path, min_cell=5)`` (``cohort share``) writes a site's event
tables and response counts with small cells withheld; ``load_share`` and ``pool``
(``cohort pool``) pool them into KM curves, medians, log-rank, Cox and response rates;
``write_pooled`` writes the folder. See docs/federated.md.
"""

from __future__ import annotations

from connector.federated.output import write_pooled
from connector.federated.pool import Pooled, PoolRefused, load_share, pool
from connector.federated.share import (
    DEFAULT_MIN_CELL,
    share_aggregates,
    share_from_db,
    write_share,
)

__all__ = ["DEFAULT_MIN_CELL", "PoolRefused", "Pooled", "load_share", "pool",
           "share_aggregates", "share_from_db", "write_pooled", "write_share"]
