"""Import every router module so each registers itself in `routing.router.ROUTERS`
(fixed, carrot, bandit, cascade, trim, r2)."""

from routing import bandit, carrot, cascade, r2, trim  # noqa: F401  (imported for their registrations)
from routing.router import ROUTERS

__all__ = ["ROUTERS"]
