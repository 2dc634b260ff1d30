"""Execution environments: the catalogue records and the pure function that picks one for a bundle.

- :mod:`.model`: environments and bundle requests as plain values;
- :mod:`.select`: :func:`~.select.select_environment`, the precedence and version rules;
- :mod:`.validate`: API and settings-file validation with Connect's error codes;
- :mod:`.host`: the ``Local`` environment describing this host;
- :mod:`.catalogue`: database records, start-up sync and resolving a bundle.
"""
