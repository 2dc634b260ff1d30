"""Serving content at ``/content/{guid}/`` (and drafts at ``/_bundle{id}/``)."""
