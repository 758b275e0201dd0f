"""``segkit-report``: compare finished runs (a sweep's jobs, or any run directories).

:mod:`segkit.report.runs` finds the runs and their swept settings, :mod:`segkit.report.tables`
writes ``report.csv``, ``report_by_config.csv`` and ``report.md``, :mod:`segkit.report.figures`
draws the PNGs (matplotlib, imported only there) and :mod:`segkit.report.paired` compares two
``segkit-eval`` results image by image with a paired bootstrap. The command is
:mod:`segkit.cli.report`.
"""
