"""Operating a running instance: the ``/admin`` API, ``callbridge admin``, account reloads.

Documented in docs/admin.md; reloads also in docs/operations.md.
"""
