"""The sections of bench/gpu_check.py, one module per theme; each section is a function of a
:class:`~gpu_sections.report.Run` returning a :class:`~gpu_sections.report.SectionResult`."""
