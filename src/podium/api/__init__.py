"""The Connect-compatible server API under ``/__api__/``: one module per resource."""
