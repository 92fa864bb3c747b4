"""The command line: `groundqa` (main.py), above the HTTP face and the evaluation."""
