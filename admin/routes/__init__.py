"""Admin API routes, one module per desk; `admin.app` merges them."""
