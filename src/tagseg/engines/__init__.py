"""Where ``tagseg segment`` and ``tagseg db build`` run.

The local engine (:func:`tagseg.batch.segment_files`, :func:`tagseg.database.build_database`) is the
default and needs nothing more. :mod:`tagseg.engines.ray` runs the same work on a Ray cluster and
writes the same files; it needs ``pip install 'tagseg[ray]'``.
"""

ENGINES = ("local", "ray")
"""Engine names that ``--engine`` accepts."""
