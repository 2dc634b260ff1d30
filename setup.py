"""The one compiled module; everything else about the package is in pyproject.toml.

``podium._hitlog`` is the usage recorder's per-request work in C (podium/hitlog.py says
why). Optional: where it cannot be built (no C compiler, no Python headers) the install
goes on, and Podium records usage with the same class in Python, which costs the proxy
more (the server says so at start).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("podium._hitlog", ["src/podium/_hitlog.c"], optional=True)])
