"""The interactive front end on a real terminal: prompt_toolkit's prompt, completion, colours, the spinner
and the pager. The only package that knows a terminal exists; ``modelshell.core`` never imports it.
"""
