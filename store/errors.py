"""The one exception type of the store."""

from __future__ import annotations


class StoreError(Exception):
    """Bad or inconsistent data in a store or an import source.

    The message always names the file concerned (and the line or id where it helps), so a
    user can find the culprit without a traceback. Raising it never modifies existing data.
    """
