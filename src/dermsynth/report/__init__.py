"""Report stage: the study's tables, figures and self-contained HTML page.

``build_report(RUN)`` writes ``RUN/report/index.html`` and every table as CSV beside it; the
table functions in :mod:`dermsynth.report.tables` are pure functions of the results frames.
"""

from dermsynth.report.build import Report, build_report, render_report, write_report
from dermsynth.report.load import StudyRun, load_run

__all__ = ["Report", "StudyRun", "build_report", "load_run", "render_report", "write_report"]
