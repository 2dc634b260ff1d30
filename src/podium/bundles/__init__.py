"""Bundles: safe unpacking of uploaded archives and the manifest model.

A bundle is untrusted input. :func:`unpack_bundle` validates and extracts one, returning
its :class:`Manifest`; every refusal is a :class:`BundleError` carrying the Connect error
code, a message for the publisher, and the HTTP status.
"""

from .manifest import (
    APP_MODES,
    CHECKSUM_MISMATCH,
    LIMIT_EXCEEDED,
    MANIFEST_INVALID,
    UNSAFE_ARCHIVE,
    BundleError,
    EnvironmentManagement,
    EnvironmentSection,
    JupyterSection,
    Manifest,
    ManifestFile,
    ManifestMetadata,
    PackageManager,
    PythonRequirement,
    PythonSection,
    QuartoSection,
    RRequirement,
    parse_manifest,
)
from .unpack import BundleLimits, missing_files, unpack_bundle

__all__ = [
    "APP_MODES",
    "CHECKSUM_MISMATCH",
    "LIMIT_EXCEEDED",
    "MANIFEST_INVALID",
    "UNSAFE_ARCHIVE",
    "BundleError",
    "BundleLimits",
    "EnvironmentManagement",
    "EnvironmentSection",
    "JupyterSection",
    "Manifest",
    "ManifestFile",
    "ManifestMetadata",
    "PackageManager",
    "PythonRequirement",
    "PythonSection",
    "QuartoSection",
    "RRequirement",
    "parse_manifest",
    "missing_files",
    "unpack_bundle",
]
