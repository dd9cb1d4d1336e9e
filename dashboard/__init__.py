"""Streamlit-side helpers shared by the pages: cached resources, the sidebar and the Altair charts.

Pages stay thin: they read widgets, call ``mnist_core`` and render with these helpers.
"""
