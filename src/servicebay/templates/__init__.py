"""Scaffolds for `bay new`: the built-in templates (folders under `builtin/`) and the code
that lists, packs, checks and renders templates, built-in or the organisation's own.

A template is a folder with a `template.json` manifest (its kind, a description and the
parameters `bay new` asks for). Every other file is copied into the new folder; a file
ending in `.j2` is rendered with Jinja2 first and loses the suffix, and `{{ name }}` in a
file or folder name is rendered too.
"""
