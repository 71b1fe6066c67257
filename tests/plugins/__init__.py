"""Families of the tests' own, outside distgan (``family: plugins.NAME``)."""
