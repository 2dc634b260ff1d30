"""Podium: a self-hosted publishing platform for data-science content."""

__version__ = "0.1.0"
# The Connect API version Podium reports: at least 2025.06.0 so rsconnect uses the
# draft + verify + activate deploy flow, which Podium supports.
CONNECT_COMPAT_VERSION = "2025.09.0"
