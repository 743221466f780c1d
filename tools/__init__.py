"""The command-line tools. From a clone run them as ``python tools/<tool>.py``; the installed package ships
them as ``seg.tools`` behind the ``seg <command>`` dispatcher (seg/commands.py)."""
