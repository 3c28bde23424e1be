"""The console: server-rendered pages for operators and auditors at /console.

Jinja2 templates, htmx (vendored in static/) for live updates; every page reads without it.
"""
