"""Podium: a self-hosted publishing platform for data-science content."""

__version__ = "0.1.0"
# The Connect API version Podium reports, which switches client features on (README,
# "Version"): past 2025.11.0 so rsconnect sends git metadata in multipart uploads (and,
# from 2025.06.0, deploys draft + verify + activate), below posit-sdk's lockfile (2025.12.0).
CONNECT_COMPAT_VERSION = "2025.11.1"
