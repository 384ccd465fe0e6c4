"""Back office for staff: the headless JSON admin API (identity, roles, audit, desks)."""
