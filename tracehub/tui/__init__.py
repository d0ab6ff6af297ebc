"""The terminal dashboard: `tracehub tui` and `tracehub up`."""
