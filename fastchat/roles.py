"""Site roles, lowest first: the one list of them and their ranks."""

from __future__ import annotations

ROLES = ("user", "moderator", "admin")
"""Every site role, ordered by rank."""

ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
"""A role's rank: a higher rank may moderate a lower one."""
