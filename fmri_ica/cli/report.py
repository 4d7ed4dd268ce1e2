"""Draw the figures and write the self-contained HTML report (report.html)."""

from ._common import stage_command

add_arguments, run = stage_command("report")
