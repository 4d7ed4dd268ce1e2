"""Reporting: figures (nilearn plotting) and the self-contained HTML report."""
