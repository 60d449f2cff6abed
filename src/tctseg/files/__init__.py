"""Files and folders: where tctseg puts its files and how it writes and reads them, below
every stage (imports only :mod:`tctseg.errors`, no torch).

- :mod:`tctseg.files.layout`: every run-folder and predictions-folder file and folder name;
- :mod:`tctseg.files.run_records`: what a run folder records, read without the trainer;
- :mod:`tctseg.files.outputs`: the write probe, names too long, atomic writes;
- :mod:`tctseg.files.locking`: one process per output folder;
- :mod:`tctseg.files.filetypes`: what a file really is, told from its first bytes.

Imports nothing itself, so importing one of its modules loads only that module.
"""
