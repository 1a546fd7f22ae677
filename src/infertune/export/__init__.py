"""Hand over the winner: the fastest verified variant's artifact, a manifest saying what it is, and its loader.

``build.export_run`` writes the folder (``infertune export`` / ``infertune run --export``); ``load.load``
(``infertune.load``) opens one with only the artifact's runtime. Nothing here is imported by a run.
"""
