"""The core of modelshell: a session of named models and a Python namespace, and what one line produced.

It knows no terminal (the front end in ``modelshell.terminal`` draws what it returns) and no framework
(adapters in ``modelshell.frameworks`` wrap the models it holds), so the shell, ``run``, pipes and
transcript replay all drive the same session.
"""
