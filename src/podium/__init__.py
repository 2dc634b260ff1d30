"""Podium: a self-hosted publishing platform for data-science content."""

__version__ = "0.1.0"
# The Connect API version Podium reports, which switches client features on (README,
# "Version"): posit-sdk's lockfile (2025.12.0, served), so also rsconnect's git metadata in
# multipart uploads (> 2025.11.0) and draft + verify + activate deploys (2025.06.0).
CONNECT_COMPAT_VERSION = "2025.12.0"
