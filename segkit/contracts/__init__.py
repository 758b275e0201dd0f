"""The contracts every architecture and every data module keeps, runnable against your own.

Each model config (``conf/model/*.yaml``) and each data config (``conf/data/*.yaml``), segkit's
and those of installed plugins (:mod:`segkit.plugins`), is a test case, named by its config
option. Run them with pytest from anywhere segkit is installed::

    pytest --pyargs segkit.contracts                 # all of them
    pytest --pyargs segkit.contracts -k toy          # one model or data config, e.g. a plugin's

A model class shrinks itself for the contract with ``contract_size`` (a class attribute of
constructor arguments); a data module with ``contract_config(directory)`` (a class method that
writes any files it reads under ``directory`` and returns config values that make it tiny).
"""
